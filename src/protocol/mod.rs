//! curfew's wire types, in one leaf module that depends on nothing else of
//! curfew (serde, and the job store's `Job`): the status report, the
//! control socket's requests and answers, and the job requests and replies.
//! Every other part imports them from here, so the parts that produce a
//! report (supervisor, proxy, processor) and those that show it (control,
//! admin, metrics, the CLI) do not import each other.

pub mod control;
pub mod jobs;
pub mod status;
