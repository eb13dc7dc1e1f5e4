//! The control socket's messages: one JSON request line, one JSON answer
//! line. `{"cmd":"status"}`, `{"cmd":"reload"}`, `{"cmd":"stop"}`,
//! `{"cmd":"scale","workers":4}`, `{"cmd":"upgrade"}`,
//! `{"cmd":"jobs","request":{…}}` →
//! `{"ok":true,…}` or `{"ok":false,"error":"…"}`.

use serde::{Deserialize, Serialize};

use super::jobs::{JobsReply, JobsRequest};
use super::status::Status;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    Reload,
    Stop,
    Scale {
        workers: usize,
    },
    /// `curfew upgrade`: start the binary on disk as a successor that takes
    /// over the listening sockets (like SIGUSR2); answered with the outcome.
    Upgrade,
    /// `curfew enqueue`, `curfew jobs …`.
    Jobs {
        request: JobsRequest,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Response {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// A failed jobs request: the status `POST /jobs` would have answered
    /// (400, 404, 413, 422, 503, …), so a client maps it the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// With a 503: when to send again, in seconds (`Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u32>,
    /// The result of a jobs request (a job, a list, an enqueue reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<JobsReply>,
}

impl Response {
    pub fn ok(message: impl Into<String>) -> Self {
        Response {
            ok: true,
            message: Some(message.into()),
            ..Default::default()
        }
    }
    pub fn err(error: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(error.into()),
            ..Default::default()
        }
    }
}
