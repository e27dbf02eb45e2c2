//! Every file under config/ parses, and the reference file states the defaults.

use slotproxy::config::Config;

#[test]
fn every_config_file_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("config dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::from_file(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 2);
}

#[test]
fn reference_file_matches_the_defaults() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/slotproxy.toml");
    let file = Config::from_file(&path).expect("reference config");
    let def = Config::default();
    // Everything but the example seeds is the default.
    let mut file_fmt = format!("{file:?}");
    file_fmt = file_fmt.replace("seeds: [\"127.0.0.1:7000\"]", "seeds: []");
    assert_eq!(file_fmt, format!("{def:?}"));
}
