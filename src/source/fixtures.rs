//! Fixture folders: every `*.json` file below a directory, in path order, each one Web API page.
//!
//! Only lists files; reading one page at a time keeps memory bounded by the largest page.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::exit::usage;

/// Every `*.json` file below `dir`, sorted by path. A missing folder, or one without any page,
/// is a usage error naming it.
pub(crate) fn page_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(usage(format!(
            "fixture folder {} does not exist or is not a directory",
            dir.display()
        )));
    }
    let mut files = Vec::new();
    collect(dir, &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(usage(format!(
            "fixture folder {} holds no *.json page",
            dir.display()
        )));
    }
    Ok(files)
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("reading folder {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading folder {}", dir.display()))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .with_context(|| format!("reading {}", path.display()))?;
        if kind.is_dir() {
            collect(&path, files)?;
        } else if path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("json"))
            && path.is_file()
        {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_found_recursively_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("2-delta")).unwrap();
        std::fs::create_dir_all(dir.path().join("1-initial")).unwrap();
        for name in [
            "2-delta/opportunities.json",
            "1-initial/b.json",
            "1-initial/a.json",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), "{}").unwrap();
        }
        let files: Vec<String> = page_files(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            files,
            [
                "1-initial/a.json",
                "1-initial/b.json",
                "2-delta/opportunities.json"
            ]
        );
    }

    #[test]
    fn a_missing_or_empty_folder_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(crate::exit::is_usage(&page_files(dir.path()).unwrap_err()));
        assert!(crate::exit::is_usage(
            &page_files(&dir.path().join("nope")).unwrap_err()
        ));
    }
}
