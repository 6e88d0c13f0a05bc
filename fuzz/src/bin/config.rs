//! One configuration file: parsed and validated, or refused.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(text) = std::str::from_utf8(data) {
            if let Ok(raw) = ferry_fuzz::config::parse_toml::<ferry_fuzz::config::RawConfig>(text) {
                let _ = raw.validate_and_build();
            }
        }
    });
}
