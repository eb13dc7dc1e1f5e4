//! Periodic schedules (see `crate::periodic`): advance in one transaction
//! with the enqueue. Concurrent advances of one schedule queue on its row
//! lock; the later ones find it moved (READ COMMITTED re-reads the row for
//! `ON CONFLICT … DO UPDATE … WHERE`) and change nothing.

use sqlx::Row;

use super::PgStore;
use super::claim::bind_job;
use crate::error::StoreError;
use crate::periodic::{PeriodicOutcome, PeriodicState};
use crate::validate::ValidJob;

impl PgStore {
    pub(crate) async fn periodic_start(
        &self,
        name: &str,
        instant: i64,
    ) -> Result<bool, StoreError> {
        sqlx::query(self.sql(
            "INSERT INTO {s}.periodic_schedules (name, last_instant, last_job_id, updated_at)
             VALUES ($1, $2, NULL, {s}.now_ms())
             ON CONFLICT (name) DO NOTHING",
        ))
        .bind(name)
        .bind(instant)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected() > 0)
        .map_err(|e| self.err(e))
    }

    pub(crate) async fn periodic_advance(
        &self,
        name: &str,
        instant: i64,
        job: Option<&ValidJob>,
    ) -> Result<PeriodicOutcome, StoreError> {
        let result = async {
            let mut tx = self.pool.begin().await?;
            let moved = sqlx::query(self.sql(
                "INSERT INTO {s}.periodic_schedules AS p (name, last_instant, last_job_id, updated_at)
                 VALUES ($1, $2, NULL, {s}.now_ms())
                 ON CONFLICT (name) DO UPDATE SET
                     last_instant = excluded.last_instant,
                     last_job_id = NULL,
                     updated_at = excluded.updated_at
                 WHERE p.last_instant < excluded.last_instant
                 RETURNING p.name",
            ))
            .bind(name)
            .bind(instant)
            .fetch_optional(&mut *tx)
            .await?;
            if moved.is_none() {
                tx.rollback().await?;
                return Ok(PeriodicOutcome::AlreadyDone);
            }
            let Some(job) = job else {
                tx.commit().await?;
                return Ok(PeriodicOutcome::Passed);
            };
            // `enqueue_ms` sends the queue's NOTIFY, delivered at commit.
            let id: i64 = bind_job(
                sqlx::query(self.sql(
                    "SELECT job_id FROM {s}.enqueue_ms($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9, $10)",
                )),
                job,
            )
            .fetch_one(&mut *tx)
            .await?
            .try_get("job_id")?;
            sqlx::query(self.sql(
                "UPDATE {s}.periodic_schedules SET last_job_id = $1 WHERE name = $2",
            ))
            .bind(id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(PeriodicOutcome::Enqueued(id))
        }
        .await;
        result.map_err(|e: sqlx::Error| self.err(e))
    }

    pub(crate) async fn periodic_states(&self) -> Result<Vec<PeriodicState>, StoreError> {
        let rows = sqlx::query(self.sql(
            "SELECT name, last_instant, last_job_id, updated_at
             FROM {s}.periodic_schedules ORDER BY name",
        ))
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
