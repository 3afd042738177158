//! Client and wire models for the Versori Platform API (v2).
//!
//! The contract this module follows is `/work/shared/versori-api.md`: paths, JSON names,
//! enum values and status codes are kept exactly as the API spells them.

pub mod auth;
pub mod client;
pub mod error;
pub mod models;
pub mod secret;

pub use client::{AuthHeaderScheme, CallObserver, CallRecord, ClientConfig, VersoriClient};
pub use error::ApiError;
pub use secret::SecretValue;
