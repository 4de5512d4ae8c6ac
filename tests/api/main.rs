//! End-to-end tests: real HTTP, real PostgreSQL (as the application role),
//! one binary so the harness is compiled once.

mod call_driver;
mod callsim;
mod catalog;
mod crash;
mod fake_deepgram;
mod fake_elevenlabs;
mod fake_openai;
mod fake_whisper;
mod health;
mod helpers;
mod jobs;
mod llm_openai;
mod memory_api;
mod offline_llm;
mod offline_speech;
mod platform_api;
mod pool;
mod post_call;
mod process;
mod provider_choice;
mod provider_outage;
mod stt_deepgram;
mod stt_whisper;
mod tenant_isolation;
mod tts_elevenlabs;
mod twilio_rest;
mod twilio_webhooks;
