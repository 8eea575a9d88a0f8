//! The gateway configuration: TOML text → `GatewayConfig` → `validate`
//! (`GatewayConfig::from_toml`). A config file is trusted more than a socket, but a bad one
//! must stop the gateway with one line naming the file, line, column and field, never a
//! panic.
//!
//! Properties: never panics; an accepted configuration validates again; every error is one
//! line that starts with the file name.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use streamgate::config::GatewayConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    match GatewayConfig::from_toml(text, path) {
        Ok(config) => config
            .validate(path)
            .expect("an accepted config validates again"),
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("fuzz.toml:"), "{message}");
            assert!(!message.contains('\n'), "one line: {message:?}");
        }
    }
});
