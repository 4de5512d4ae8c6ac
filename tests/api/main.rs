//! End-to-end tests: real HTTP, real PostgreSQL (as the application role),
//! one binary so the harness is compiled once.

mod call_driver;
mod callsim;
mod catalog;
mod health;
mod helpers;
mod offline_llm;
mod platform_api;
mod pool;
mod process;
mod tenant_isolation;
mod twilio_rest;
mod twilio_webhooks;
