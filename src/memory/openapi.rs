//! The memory API's OpenAPI 3 document, served at `GET /openapi.json`.
//! Written by hand; `tests/api/memory_api.rs` checks it lists every route
//! the router serves.

use serde_json::{json, Value};

/// A `$ref` to a component schema.
fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A JSON response described by a component schema.
fn response(description: &str, name: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema(name) } }
    })
}

/// The error responses every memory route can give.
fn errors(mut responses: Value, extra_404: Option<&str>) -> Value {
    let not_found = match extra_404 {
        Some(what) => format!("Unknown customer, or {what}."),
        None => "Unknown customer.".to_string(),
    };
    responses["400"] = response(
        "customer_id missing (exact body: {\"success\": false, \"error\": \"customer_id is required for multi-tenant security\"}), or an invalid request.",
        "Error",
    );
    responses["401"] = response("No or an invalid API key (checked first).", "Error");
    responses["403"] = response(
        "A tenant key naming another customer, or a platform key.",
        "Error",
    );
    responses["404"] = response(&not_found, "Error");
    responses
}

fn customer_query() -> Value {
    json!({
        "name": "customer_id", "in": "query", "required": true,
        "description": "The tenant (required on every call; may be given in the JSON body instead for POST routes).",
        "schema": { "type": "string", "format": "uuid" }
    })
}

fn user_path() -> Value {
    json!({
        "name": "user_id", "in": "path", "required": true,
        "description": "The caller's E.164 number.",
        "schema": { "$ref": "#/components/schemas/E164" }
    })
}

fn limit_query() -> Value {
    json!({
        "name": "limit", "in": "query", "required": false,
        "schema": { "type": "integer", "minimum": 1, "maximum": 500, "default": 50 }
    })
}

fn body(name: &str) -> Value {
    json!({
        "required": true,
        "content": { "application/json": { "schema": schema(name) } }
    })
}

/// The whole document.
pub fn document() -> Value {
    let store = json!({
        "summary": "Store a memory about a caller",
        "parameters": [customer_query()],
        "requestBody": body("NewMemory"),
        "responses": errors(json!({ "201": response("Stored.", "MemoryStored") }), None)
    });
    let mut legacy_store = store.clone();
    legacy_store["summary"] = json!("Store a memory about a caller (legacy path)");
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Switchboard memory API",
            "version": "1.0.0",
            "description": "Caller memory, per tenant. Every call names its tenant with customer_id; \
                            a tenant key may only name its own customer, a service key any. \
                            Thread ids are customer_{customer_id}_user_{digits}."
        },
        "security": [{ "bearer": [] }],
        "paths": {
            "/memory/store": { "post": legacy_store },
            "/v1/memories": { "post": store },
            "/v1/memories/user/{user_id}": { "get": {
                "summary": "A caller's memories, newest first",
                "parameters": [user_path(), customer_query(), limit_query()],
                "responses": errors(json!({ "200": response("Memories.", "MemoryList") }), None)
            }},
            "/v1/memories/{memory_id}": { "delete": {
                "summary": "Delete one memory",
                "parameters": [
                    { "name": "memory_id", "in": "path", "required": true,
                      "schema": { "type": "string", "format": "uuid" } },
                    customer_query()
                ],
                "responses": errors(json!({ "200": response("Deleted.", "MemoryDeleted") }),
                                    Some("no such memory (\"memory not found\")"))
            }},
            "/v2/context/enriched": { "post": {
                "summary": "The caller card and the LLM context block",
                "description": "Sensitive template fields are left out of the card and the context unless reveal_sensitive is true (caller ID can be spoofed: verify first).",
                "parameters": [customer_query()],
                "requestBody": body("EnrichedRequest"),
                "responses": errors(json!({ "200": response("The context.", "EnrichedContext") }), None)
            }},
            "/v2/process-call": { "post": {
                "summary": "Hand over a finished call's transcript; enqueues its post-call job",
                "description": "Idempotent per call_sid: posting the same call again returns the same job.",
                "parameters": [customer_query()],
                "requestBody": body("ProcessCall"),
                "responses": errors(json!({
                    "202": response("Accepted; the post-call job is queued.", "ProcessedCall"),
                    "409": response("The call_sid is recorded for another caller.", "Error")
                }), None)
            }},
            "/v2/summaries/{user_id}": { "get": {
                "summary": "A caller's call summaries, newest first",
                "parameters": [user_path(), customer_query(), limit_query()],
                "responses": errors(json!({ "200": response("Summaries.", "SummaryList") }), None)
            }},
            "/v2/profile/{user_id}": { "get": {
                "summary": "A caller's profile and current facts",
                "parameters": [user_path(), customer_query()],
                "responses": errors(json!({ "200": response("The profile.", "Profile") }),
                                    Some("an unknown caller (\"caller not found\")"))
            }},
            "/v2/personality/{user_id}": { "get": {
                "summary": "A caller's personality averages and per-call scores",
                "parameters": [user_path(), customer_query(), limit_query()],
                "responses": errors(json!({ "200": response("Personality.", "Personality") }),
                                    Some("no analysed call (\"caller not found\")"))
            }},
            "/v2/callers/{user_id}": { "delete": {
                "summary": "Erase every trace of a caller for this tenant (audited)",
                "parameters": [user_path(), customer_query()],
                "responses": errors(json!({ "200": response("Erased; rows removed per table.", "Erasure") }), None)
            }}
        },
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer",
                            "description": "A service key (sbk_s_…) or a tenant key (sbk_t_…)." }
            },
            "schemas": schemas()
        }
    })
}

fn schemas() -> Value {
    let success = json!({ "type": "boolean", "enum": [true] });
    let timestamp = json!({ "type": "string", "format": "date-time" });
    let nullable_timestamp = json!({ "type": "string", "format": "date-time", "nullable": true });
    let uuid = json!({ "type": "string", "format": "uuid" });
    let memory = json!({
        "type": "object",
        "properties": {
            "memory_id": uuid, "user_id": schema("E164"),
            "kind": { "type": "string", "enum": ["note", "follow_up", "preference"] },
            "content": { "type": "string" }, "metadata": { "type": "object" },
            "source_call_id": { "type": "string", "format": "uuid", "nullable": true },
            "resolved_at": nullable_timestamp, "created_at": timestamp
        }
    });
    json!({
        "E164": { "type": "string", "pattern": "^\\+[1-9][0-9]{6,14}$", "example": "+15551234567" },
        "Error": {
            "type": "object", "required": ["success", "error"],
            "properties": { "success": { "type": "boolean", "enum": [false] },
                            "error": { "type": "string" } }
        },
        "NewMemory": {
            "type": "object", "required": ["customer_id", "user_id", "content"],
            "properties": {
                "customer_id": uuid, "user_id": schema("E164"),
                "content": { "type": "string", "maxLength": 10000 },
                "kind": { "type": "string", "enum": ["note", "follow_up", "preference"], "default": "note" },
                "metadata": { "type": "object" }
            }
        },
        "Memory": memory,
        "MemoryStored": { "type": "object", "properties": {
            "success": success, "thread_id": { "type": "string" }, "memory": schema("Memory") } },
        "MemoryList": { "type": "object", "properties": {
            "success": success, "thread_id": { "type": "string" }, "user_id": schema("E164"),
            "memories": { "type": "array", "items": schema("Memory") } } },
        "MemoryDeleted": { "type": "object", "properties": {
            "success": success, "deleted": { "type": "boolean" }, "memory_id": uuid } },
        "EnrichedRequest": {
            "type": "object", "required": ["customer_id", "user_id"],
            "properties": {
                "customer_id": uuid, "user_id": schema("E164"),
                "reveal_sensitive": { "type": "boolean", "default": false },
                "recent_calls": { "type": "integer", "minimum": 0, "maximum": 20, "default": 3 }
            }
        },
        "EnrichedContext": { "type": "object", "properties": {
            "success": success, "thread_id": { "type": "string" }, "user_id": schema("E164"),
            "known": { "type": "boolean" },
            "greeting_name": { "type": "string", "nullable": true },
            "card": { "type": "object", "nullable": true,
                      "description": "Profile, fields, quick bio, call count, recent summaries, open follow-ups, current facts, personality averages, template fields; withheld lists sensitive keys left out." },
            "context": { "type": "string", "description": "Text block for the LLM system prompt." } } },
        "ProcessCall": {
            "type": "object", "required": ["customer_id", "call_sid", "user_id", "transcript"],
            "properties": {
                "customer_id": uuid, "call_sid": { "type": "string", "maxLength": 128 },
                "user_id": schema("E164"), "to_number": { "type": "string" },
                "started_at": timestamp, "ended_at": timestamp,
                "transcript": { "type": "array", "items": {
                    "type": "object", "required": ["speaker", "text"],
                    "properties": {
                        "speaker": { "type": "string",
                                     "enum": ["caller", "user", "agent", "assistant", "system", "tool", "dtmf"] },
                        "text": { "type": "string" } } } }
            }
        },
        "ProcessedCall": { "type": "object", "properties": {
            "success": success, "thread_id": { "type": "string" }, "call_id": uuid,
            "call_sid": { "type": "string" }, "job_id": uuid,
            "created": { "type": "boolean" }, "job_created": { "type": "boolean" } } },
        "SummaryList": { "type": "object", "properties": {
            "success": success, "thread_id": { "type": "string" }, "user_id": schema("E164"),
            "summaries": { "type": "array", "items": { "type": "object", "properties": {
                "call_id": uuid, "summary": { "type": "string" },
                "topics": { "type": "array", "items": { "type": "string" } },
                "action_items": { "type": "array" }, "source": { "type": "string" },
                "created_at": timestamp } } } } },
        "Profile": { "type": "object", "properties": {
            "success": success, "thread_id": { "type": "string" },
            "profile": { "type": "object", "properties": {
                "user_id": schema("E164"), "display_name": { "type": "string", "nullable": true },
                "fields": { "type": "object" }, "quick_bio": { "type": "string", "nullable": true },
                "call_count": { "type": "integer" }, "first_call_at": nullable_timestamp,
                "last_call_at": nullable_timestamp } },
            "facts": { "type": "array", "items": { "type": "object", "properties": {
                "fact_id": uuid, "key": { "type": "string" }, "value": {},
                "source_call_id": { "type": "string", "format": "uuid", "nullable": true },
                "created_at": timestamp } } } } },
        "Personality": { "type": "object", "properties": {
            "success": success, "thread_id": { "type": "string" },
            "averages": { "type": "object", "properties": {
                "samples": { "type": "integer" }, "avg_formality": { "type": "number" },
                "avg_verbosity": { "type": "number" }, "avg_sentiment": { "type": "number" },
                "avg_patience": { "type": "number" }, "avg_decisiveness": { "type": "number" },
                "updated_at": timestamp } },
            "calls": { "type": "array", "items": { "type": "object" } } } },
        "Erasure": { "type": "object", "properties": {
            "success": success, "thread_id": { "type": "string" },
            "erased": { "type": "object", "additionalProperties": { "type": "integer" },
                        "description": "Rows removed per table: profiles, facts, memories, summaries, call_personality, caller_personality, calls, turns, sms_messages, sms_consent, jobs." } } }
    })
}
