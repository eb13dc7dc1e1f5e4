//! Periodic schedules (see `crate::periodic`): advance in one write
//! transaction with the enqueue.

use sqlx::Row;

use super::SqliteStore;
use crate::error::StoreError;
use crate::model::now_ms;
use crate::periodic::{PeriodicOutcome, PeriodicState};
use crate::validate::ValidJob;

impl SqliteStore {
    pub(crate) async fn periodic_start(
        &self,
        name: &str,
        instant: i64,
    ) -> Result<bool, StoreError> {
        let mut w = self.begin_write().await?;
        let result = sqlx::query(
            "INSERT INTO periodic_schedules (name, last_instant, last_job_id, updated_at)
             VALUES (?1, ?2, NULL, ?3)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(instant)
        .bind(now_ms())
        .execute(&mut *w.tx)
        .await
        .map(|r| r.rows_affected() > 0);
        w.finish(&self.name, result).await
    }

    pub(crate) async fn periodic_advance(
        &self,
        name: &str,
        instant: i64,
        job: Option<&ValidJob>,
    ) -> Result<PeriodicOutcome, StoreError> {
        let now = now_ms();
        let mut w = self.begin_write().await?;
        let result = async {
            // Inserted, or moved forward; no row back: at or past it already.
            let moved = sqlx::query(
                "INSERT INTO periodic_schedules (name, last_instant, last_job_id, updated_at)
                 VALUES (?1, ?2, NULL, ?3)
                 ON CONFLICT (name) DO UPDATE SET
                     last_instant = excluded.last_instant,
                     last_job_id = NULL,
                     updated_at = excluded.updated_at
                 WHERE periodic_schedules.last_instant < excluded.last_instant
                 RETURNING name",
            )
            .bind(name)
            .bind(instant)
            .bind(now)
            .fetch_optional(&mut *w.tx)
            .await?;
            if moved.is_none() {
                return Ok(PeriodicOutcome::AlreadyDone);
            }
            let Some(job) = job else {
                return Ok(PeriodicOutcome::Passed);
            };
            let enqueued = Self::insert(&mut w.tx, job, now).await?;
            sqlx::query("UPDATE periodic_schedules SET last_job_id = ?1 WHERE name = ?2")
                .bind(enqueued.id)
                .bind(name)
                .execute(&mut *w.tx)
                .await?;
            Ok(PeriodicOutcome::Enqueued(enqueued.id))
        }
        .await;
        let outcome = w.finish(&self.name, result).await?;
        if let (PeriodicOutcome::Enqueued(_), Some(job)) = (outcome, job) {
            self.wake(&job.queue);
        }
        Ok(outcome)
    }

    pub(crate) async fn periodic_states(&self) -> Result<Vec<PeriodicState>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, last_instant, last_job_id, updated_at
             FROM periodic_schedules ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| {
                Ok(PeriodicState {
                    name: r.try_get("name")?,
                    last_instant: r.try_get("last_instant")?,
                    last_job_id: r.try_get("last_job_id")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }
}
