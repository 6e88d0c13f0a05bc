//! Property-based tests of the parsers that read what others wrote: the queue message parser,
//! the configuration loader and the manifest parser. Any input is accepted or refused with an
//! error, never a panic. Brief here (CI); `scripts/fuzz` runs the long coverage-guided campaign.

use ferry_shared::config::{parse_toml, RawConfig};
use ferry_shared::manifest::locate_export;
use ferry_shared::queue::ShardTask;
use ferry_shared::store::LocalStore;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn queue_messages_parse_or_are_refused(body in "\\PC{0,300}") {
        let _ = ShardTask::parse_message(&body);
    }

    #[test]
    fn valid_tasks_round_trip(run in "[a-z0-9-]{1,40}", shard in "[a-z0-9]{1,30}", token in "[0-9a-f]{32}") {
        let task = ShardTask::new(&run, &shard).for_target(&token);
        prop_assert_eq!(ShardTask::parse_message(&task.to_message()).unwrap(), task);
    }

    #[test]
    fn config_files_load_or_are_refused(
        section in prop::sample::select(vec!["load", "mapping", "target", "aws", "queue", "metrics", "bogus"]),
        key in "[a-z_]{1,24}",
        value in prop_oneof!["-?[0-9]{1,20}", "\"\\PC{0,20}\"", "true", "\\[\\]", "\\{\\}"],
    ) {
        let text = format!("version = 1\n[{section}]\n{key} = {value}\n");
        if let Ok(raw) = parse_toml::<RawConfig>(&text) {
            let _ = raw.validate_and_build();
        }
    }

    #[test]
    fn any_config_text_is_refused_cleanly(text in "\\PC{0,200}") {
        if let Ok(raw) = parse_toml::<RawConfig>(&text) {
            let _ = raw.validate_and_build();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn manifests_parse_or_are_refused(summary in "\\PC{0,300}", files in "\\PC{0,300}", as_json in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let export = dir.path().join("AWSDynamoDB/01700000000000-0a1b2c3d");
        std::fs::create_dir_all(export.join("data")).unwrap();
        let (summary, files) = if as_json {
            (
                format!(r#"{{"version":"2020-06-30","exportArn":"{}","itemCount":3,"manifestFilesS3Key":"x"}}"#, summary.replace(['"', '\\'], "")),
                format!(r#"{{"itemCount":1,"md5Checksum":"{}","dataFileS3Key":"data/a.json.gz"}}"#, files.replace(['"', '\\'], "")),
            )
        } else {
            (summary, files)
        };
        std::fs::write(export.join("manifest-summary.json"), summary).unwrap();
        std::fs::write(export.join("manifest-files.json"), files).unwrap();
        let store = LocalStore::new(dir.path());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _ = runtime.block_on(locate_export(&store, "AWSDynamoDB/01700000000000-0a1b2c3d/"));
    }
}
