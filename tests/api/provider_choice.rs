//! Which providers serve a tenant's call: its own key (with the base URL
//! stored beside it) before the platform's account, and its first choice
//! per role in front of the rest. Real database and keyring, real HTTP to
//! two fake OpenAI servers: one the platform's, one the tenant's own.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::json;
use switchboard::configuration::VendorAccount;
use switchboard::platform::SetCredential;
use switchboard::providers::catalog::{AutoChains, LocalModels, VendorAccounts};
use switchboard::providers::pipeline::ChainSource;
use switchboard::providers::roles::{
    LanguageModel, LlmEvent, LlmMessage, LlmRequest, LlmStream, ProviderError,
};
use switchboard::providers::CallSetup;

use crate::fake_openai::{sse_body, text_chunks, FakeOpenAi, Reply};
use crate::helpers::TestDb;

const PLATFORM_KEY: &str = "sk-platform-0a1b2c3d4e5f60718293";
const TENANT_KEY: &str = "sk-tenant-9f8e7d6c5b4a39281706";

/// Stands in for the local model: never asked in these tests.
struct LocalStandIn;

impl LanguageModel for LocalStandIn {
    fn name(&self) -> &'static str {
        "smollm2"
    }

    fn stream(&self, _: LlmRequest) -> BoxFuture<'static, Result<LlmStream, ProviderError>> {
        Box::pin(async {
            Err(ProviderError::Unavailable {
                provider: "smollm2",
                message: "stand-in".into(),
            })
        })
    }
}

fn reply(text: &str) -> Reply {
    Reply::sse(&sse_body(&text_chunks(&[text], 5, 1)), 64)
}

async fn first_text(llm: &Arc<dyn LanguageModel>) -> String {
    let request = LlmRequest {
        model: "gpt-4o-mini".into(),
        messages: vec![LlmMessage::User("Hello?".into())],
        tools: Vec::new(),
        temperature: None,
        max_tokens: None,
    };
    let mut stream = llm.stream(request).await.expect("stream starts");
    while let Some(event) = stream.next().await {
        if let LlmEvent::Text(text) = event.expect("event") {
            return text;
        }
    }
    panic!("no text")
}

#[tokio::test]
async fn a_tenants_own_key_and_base_url_come_first_and_its_choice_reorders_the_chain() {
    let db = TestDb::new().await;
    let own = db.tenant("own-key", "+15550107001").await;
    let plain = db.tenant("platform-only", "+15550107002").await;
    let platform_fake = FakeOpenAi::start(Some(PLATFORM_KEY), vec![reply("platform")]).await;
    let tenant_fake = FakeOpenAi::start(Some(TENANT_KEY), vec![reply("tenant")]).await;

    let mut settings = serde_json::Map::new();
    settings.insert("base_url".into(), json!(tenant_fake.base_url.as_str()));
    db.platform
        .set_credential(
            "test",
            "own-key",
            SetCredential {
                provider: "openai".into(),
                secret: SecretString::from(TENANT_KEY.to_string()),
                public_id: None,
                settings,
            },
        )
        .await
        .expect("credential stored");

    let mut vendors = BTreeMap::new();
    vendors.insert(
        "openai",
        VendorAccount {
            api_key: Some(SecretString::from(PLATFORM_KEY.to_string())),
            base_url: Some(platform_fake.base_url.clone()),
            model: None,
            voice_id: None,
        },
    );
    let local = LocalModels {
        llm: Some(Arc::new(LocalStandIn)),
        ..LocalModels::default()
    };
    let auto = AutoChains::new(
        db.platform.clone(),
        VendorAccounts::from_settings(&vendors),
        local,
    );

    // The tenant with its own key: its client first, talking to its own
    // server with its own key; then the platform's; then the local model.
    let chains = auto.chains(&CallSetup::basic(own, "CA-own")).await;
    let names: Vec<_> = chains.llm.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["openai", "openai", "smollm2"]);
    assert_eq!(first_text(&chains.llm[0]).await, "tenant");
    assert_eq!(tenant_fake.requests().len(), 1);
    assert!(platform_fake.requests().is_empty());

    // A tenant without a key gets the platform's account...
    let chains = auto.chains(&CallSetup::basic(plain, "CA-plain")).await;
    let names: Vec<_> = chains.llm.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["openai", "smollm2"]);
    assert_eq!(first_text(&chains.llm[0]).await, "platform");

    // ...unless it chose the local model, which then leads.
    let mut setup = CallSetup::basic(plain, "CA-local");
    setup.provider_settings = json!({"llm": {"provider": "local"}});
    let chains = auto.chains(&setup).await;
    let names: Vec<_> = chains.llm.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["smollm2", "openai"]);

    db.close().await;
}
