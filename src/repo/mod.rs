//! Repository functions, one module per table family. Tenant repositories
//! take `&mut TenantTx` as their executor and never name a `customer_id`
//! themselves beyond the transaction's own; the platform ones take a plain
//! connection and touch platform-level tables only.

pub mod api_keys;
pub mod audit;
pub mod callers;
pub mod calls;
pub mod credentials;
pub mod customers;
pub mod insights;
pub mod jobs;
pub mod memory;
pub mod numbers;
pub mod platform;
pub mod staff;
pub mod templates;
pub mod turns;
pub mod usage;
