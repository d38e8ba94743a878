//! The catalogue of every `.sql` file under `sql/`, embedded at compile time.
//!
//! Schema migrations are append-only and applied in order (their position is the
//! `PRAGMA user_version` they lead to); views are dropped and re-created on every run; the
//! refresh scripts run inside a refresh of the export rows. A test
//! checks that this catalogue and the `sql/` folder list the same files.

/// One embedded SQL file: its path under `sql/` (for error messages) and its text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SqlFile {
    pub path: &'static str,
    pub text: &'static str,
}

macro_rules! sql_file {
    ($path:literal) => {
        SqlFile {
            path: $path,
            text: include_str!(concat!("../", $path)),
        }
    };
}

/// Schema migrations, oldest first; never edit one that has landed, add a new one.
pub(crate) const MIGRATIONS: &[SqlFile] = &[
    sql_file!("sql/schema/0001_staging.sql"),
    sql_file!("sql/schema/0002_push.sql"),
    sql_file!("sql/schema/0003_pull_state.sql"),
    sql_file!("sql/schema/0004_owners.sql"),
    sql_file!("sql/schema/0005_problems.sql"),
    sql_file!("sql/schema/0006_export_rows.sql"),
    sql_file!("sql/schema/0007_pending_in_rowid_order.sql"),
    sql_file!("sql/schema/0008_export_index_aside.sql"),
    sql_file!("sql/schema/0009_staging_index_aside.sql"),
    sql_file!("sql/schema/0010_marketo_describe.sql"),
    sql_file!("sql/schema/0011_page_history_by_run.sql"),
    sql_file!("sql/schema/0012_unsendable_problems.sql"),
    sql_file!("sql/schema/0013_refused_records.sql"),
    sql_file!("sql/schema/0014_lost_in_marketo.sql"),
    sql_file!("sql/schema/0015_marketo_sample.sql"),
    sql_file!("sql/schema/0016_resolved_problems_pruned.sql"),
    sql_file!("sql/schema/0017_sample_roles.sql"),
    sql_file!("sql/schema/0018_owner_index_covers_type.sql"),
    sql_file!("sql/schema/0019_sample_companies.sql"),
    sql_file!("sql/schema/0020_interrupted_runs.sql"),
];

/// Rule views in creation order; each file creates the view its name ends with.
pub(crate) const VIEWS: &[SqlFile] = &[
    sql_file!("sql/views/01_opportunity_customer.sql"),
    sql_file!("sql/views/02_contact_account.sql"),
    sql_file!("sql/views/03_opportunity_account.sql"),
    sql_file!("sql/views/04_opportunity_connection.sql"),
    sql_file!("sql/views/05_opportunity_role_claim.sql"),
    sql_file!("sql/views/06_opportunity_role_candidate.sql"),
    sql_file!("sql/views/07_opportunity_contact_role.sql"),
    sql_file!("sql/views/08_owner_sales_person.sql"),
    sql_file!("sql/views/09_mkto_company.sql"),
    sql_file!("sql/views/10_mkto_lead.sql"),
    sql_file!("sql/views/11_mkto_opportunity.sql"),
    sql_file!("sql/views/12_mkto_opportunity_role.sql"),
    sql_file!("sql/views/13_mkto_sales_person.sql"),
];

/// The scripts of a partial refresh of the export rows (`export_rows`): the roots a change
/// touched, then the staged records they depend on.
pub(crate) const REFRESH: [SqlFile; 2] = [
    sql_file!("sql/refresh/1_targets.sql"),
    sql_file!("sql/refresh/2_subset.sql"),
];

impl SqlFile {
    /// The view name a `sql/views/NN_name.sql` file creates.
    pub(crate) fn view_name(&self) -> &'static str {
        let file = self.path.rsplit('/').next().unwrap_or(self.path);
        let stem = file.strip_suffix(".sql").unwrap_or(file);
        stem.split_once('_').map_or(stem, |(_, name)| name)
    }

    /// The text of a view file with its view declared as `kind` instead (`TEMP VIEW`, or
    /// `TEMP TABLE` to materialize it): the same SQL, created in this connection's temp schema.
    pub(crate) fn created_as(&self, kind: &str) -> String {
        let name = self.view_name();
        self.text.replacen(
            &format!("CREATE VIEW {name} AS"),
            &format!("CREATE {kind} {name} AS"),
            1,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn files_in(dir: &str) -> Vec<String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut names: Vec<String> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| format!("{dir}/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn catalogue_matches_sql_folder() {
        let migrations: Vec<String> = MIGRATIONS.iter().map(|f| f.path.to_string()).collect();
        assert_eq!(migrations, files_in("sql/schema"));
        let views: Vec<String> = VIEWS.iter().map(|f| f.path.to_string()).collect();
        assert_eq!(views, files_in("sql/views"));
        let refresh: Vec<String> = REFRESH.iter().map(|f| f.path.to_string()).collect();
        assert_eq!(refresh, files_in("sql/refresh"));
    }

    #[test]
    fn each_view_file_creates_the_view_it_is_named_after() {
        for file in VIEWS {
            let create = format!("CREATE VIEW {} AS", file.view_name());
            assert!(
                file.text.contains(&create),
                "{} must contain `{create}`",
                file.path
            );
            assert!(
                file.text.starts_with("-- rule:"),
                "{} must open with a `-- rule:` line",
                file.path
            );
        }
    }
}
