//! Users, agents, grants, tokens, consent requests, mandates and status lists.
//!
//! Plain records for the token service and the wallet; the decisions that must be atomic live
//! in [`super::decision`].
