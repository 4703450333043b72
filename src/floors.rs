//! The floors of the house: a module imports only from its own floor or below, so that no
//! circle can form. The list lives here, with the test that keeps it true.

/// Each top-level module of `src/` and its floor, bottom to top.
pub const FLOORS: &[(&str, u8)] = &[
    ("secret", 0),
    ("text", 0),
    ("clock", 0),
    ("files", 0),
    ("lock", 0),
    ("floors", 0),
    ("config", 1),
    ("withings", 2),
    ("render", 2),
    ("collector", 3),
    ("account", 4),
    ("app", 5),
    ("http", 6),
    ("notify", 6),
    ("backfill", 6),
    ("auth", 6),
    ("telemetry", 6),
    // Moving to a crate of its own; until then it may use anything.
    ("simulator", 7),
    ("main", 7),
];

#[cfg(test)]
mod tests {
    use super::FLOORS;
    use std::path::{Path, PathBuf};

    /// Upward references that other branches of the redesign remove (the collectors' and
    /// the Withings client's). Empty this list as they land; never add to it.
    const PENDING: &[(&str, &str)] = &[
        ("withings/client.rs", "collector"),
        ("withings/client.rs", "notify"),
        ("render/families.rs", "account"),
        ("account/readings.rs", "backfill"),
    ];

    fn floor(module: &str) -> Option<u8> {
        FLOORS.iter().find(|(m, _)| *m == module).map(|(_, f)| *f)
    }

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn no_module_imports_from_a_higher_floor() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let mut upward = Vec::new();
        for path in files {
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let top = rel.split('/').next().unwrap().trim_end_matches(".rs");
            if top == "lib" {
                continue;
            }
            let own = floor(top).unwrap_or_else(|| panic!("{rel}: give {top} a floor"));
            let text = std::fs::read_to_string(&path).unwrap();
            for (at, _) in text.match_indices("crate::") {
                let name: String = text[at + 7..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let Some(theirs) = floor(&name) else { continue };
                if theirs > own && !PENDING.contains(&(rel.as_str(), name.as_str())) {
                    let line = text[..at].lines().count();
                    upward.push(format!(
                        "{rel}:{line}: {top} (floor {own}) uses {name} (floor {theirs})"
                    ));
                }
            }
        }
        assert!(upward.is_empty(), "{}", upward.join("\n"));
    }
}
