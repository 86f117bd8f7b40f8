//! Every scenario in `scenarios/` and every complete example in `docs/SIMULATOR.md` parses.

use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn repository_scenarios_parse() {
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("scenarios")).expect("scenarios/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let s = braid_sim::Scenario::from_file(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!s.link.is_empty(), "{}", path.display());
            n += 1;
        }
    }
    assert!(n >= 6, "{n} scenarios");
}

#[test]
fn documented_examples_parse() {
    let doc = std::fs::read_to_string(root().join("docs/SIMULATOR.md")).expect("docs/SIMULATOR.md");
    let mut complete = 0;
    for block in doc.split("```toml").skip(1) {
        let block = block.split("```").next().unwrap_or("");
        // Fragments (events only) are checked by adding a transfer and a link.
        let text = if block.contains("[transfer]") {
            complete += 1;
            block.to_string()
        } else {
            format!(
                "[transfer]\nsize = \"1MB\"\n[[link]]\nname = \"fiber\"\nrate = \"1Mbit\"\ndelay = \"1ms\"\n{block}"
            )
        };
        braid_sim::Scenario::from_toml(&text).unwrap_or_else(|e| panic!("{e}\nin:\n{text}"));
    }
    assert!(complete >= 2);
}
