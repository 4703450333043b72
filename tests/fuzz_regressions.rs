//! The fuzz targets' properties on stable: every committed seed (`fuzz/seeds/<target>/`) and
//! every input the fuzzer ever crashed on (`tests/fuzz_regressions/<target>/`) goes through
//! the same check the fuzz target runs (`fuzz/checks.rs`). See FUZZING.md.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, bytes)
        })
        .collect()
}

/// Runs `check` on every file of the target's seed and regression directories; a failure
/// names the file.
fn run_all(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for dir in [
        root.join("fuzz/seeds").join(target),
        root.join("tests/fuzz_regressions").join(target),
    ] {
        if !dir.exists() {
            continue;
        }
        for (path, bytes) in inputs(&dir) {
            let outcome = std::panic::catch_unwind(|| check(&bytes));
            assert!(outcome.is_ok(), "{target}: {} fails", path.display());
            count += 1;
        }
    }
    assert!(count > 0, "no inputs for {target}");
}

#[test]
fn getmeas_seeds_and_past_crashes_hold_the_properties() {
    run_all("getmeas", checks::getmeas);
}

#[test]
fn token_response_seeds_and_past_crashes_hold_the_properties() {
    run_all("token_response", checks::token_response);
}

#[test]
fn token_file_seeds_and_past_crashes_hold_the_properties() {
    run_all("token_file", checks::token_file);
}

#[test]
fn web_config_seeds_and_past_crashes_hold_the_properties() {
    run_all("web_config", checks::web_config);
}

/// The checks must be able to fail, or the fuzzer finds nothing: a known-bad exposition is
/// refused by the line parser.
#[test]
fn the_exposition_check_refuses_malformed_lines() {
    for bad in [
        "withings_x{a=\"1\"} \n",
        "withings_x{a=\"1} 1\n",
        "withings_x{a=\"\\t\"} 1\n",
        "1withings 1\n",
        "withings_x 1",
        "# WHAT withings_x\n",
    ] {
        let text = bad.to_owned();
        assert!(
            std::panic::catch_unwind(move || checks::check_exposition(&text)).is_err(),
            "{bad:?} was accepted"
        );
    }
    let good = "# HELP a_b x\n# TYPE a_b gauge\na_b{k=\"v\\\"\\n\\\\\",l=\"\"} 1.5\na_b 2\n";
    assert_eq!(checks::check_exposition(good).len(), 2);
}
