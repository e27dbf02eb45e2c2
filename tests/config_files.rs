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

/// The reference file names every setting (so a new setting cannot be added without documenting
/// it), marks each `[live]` or `[restart]` as `PROXY CONFIG SET` treats it, and names nothing else.
#[test]
fn reference_file_documents_every_setting() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/slotproxy.toml");
    let text = std::fs::read_to_string(&path).expect("reference config");
    let table: toml::Table = text.parse().expect("reference config is TOML");
    for s in slotproxy::config::SETTINGS {
        assert!(
            table.contains_key(s.name),
            "config/slotproxy.toml does not document setting {:?}",
            s.name
        );
        // The comment block right above the key carries the marker.
        let lines: Vec<&str> = text.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.starts_with(&format!("{} =", s.name)))
            .expect("key line");
        let comment: String = lines[..at]
            .iter()
            .rev()
            .take_while(|l| l.starts_with('#'))
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        let want = if s.live { "[live]" } else { "[restart]" };
        assert!(
            comment.contains(want),
            "setting {:?}: its comment must say {want}",
            s.name
        );
    }
    for key in table.keys() {
        assert!(
            slotproxy::config::setting(key).is_some(),
            "config/slotproxy.toml documents {key:?}, which is not a setting"
        );
    }
}
