//! One queue message body: parsed and checked, or refused.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(body) = std::str::from_utf8(data) {
            if let Ok(task) = ferry_fuzz::queue::ShardTask::parse_message(body) {
                assert_eq!(
                    ferry_fuzz::queue::ShardTask::parse_message(&task.to_message()).unwrap(),
                    task
                );
            }
        }
    });
}
