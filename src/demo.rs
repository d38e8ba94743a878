//! The bundled demo org, compiled into the binary so that `oppsync demo` works from anywhere:
//! the pages of `fixtures/demo/` (a first full pull, then a delta of changes).

macro_rules! demo_page {
    ($path:literal) => {
        ($path, include_str!(concat!("../fixtures/demo/", $path)))
    };
}

/// The first pull: a complete snapshot of the demo org.
pub(crate) const INITIAL: &[(&str, &str)] = &[
    demo_page!("1-initial/accounts.json"),
    demo_page!("1-initial/connectionroles.json"),
    demo_page!("1-initial/connections.json"),
    demo_page!("1-initial/contacts.json"),
    demo_page!("1-initial/opportunities-1.json"),
    demo_page!("1-initial/opportunities-2.json"),
    demo_page!("1-initial/systemusers.json"),
];

/// A later incremental pull: delta pages with updates, a new record and deletes.
pub(crate) const CHANGES: &[(&str, &str)] = &[
    demo_page!("2-changes/connections.json"),
    demo_page!("2-changes/opportunities.json"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_demo_fixture_file_is_bundled() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo");
        let mut on_disk = Vec::new();
        for phase in ["1-initial", "2-changes"] {
            for entry in std::fs::read_dir(root.join(phase)).unwrap() {
                on_disk.push(format!(
                    "{phase}/{}",
                    entry.unwrap().file_name().to_string_lossy()
                ));
            }
        }
        on_disk.sort();
        let mut bundled: Vec<String> = INITIAL
            .iter()
            .chain(CHANGES)
            .map(|(p, _)| p.to_string())
            .collect();
        bundled.sort();
        assert_eq!(bundled, on_disk);
    }
}
