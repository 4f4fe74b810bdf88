//! Mapping S3 keys to blob names: `target prefix + key without the source prefix`, and the
//! rules that make a name unusable in Azure.

/// Why a key cannot be copied as a blob name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameIssue {
    /// A key ending in `/`: a folder marker, not content.
    FolderMarker,
    /// The key does not start with the source prefix.
    OutsidePrefix,
    /// The name breaks an Azure rule (the text says which).
    Invalid(String),
}

impl NameIssue {
    /// The reason recorded in the checkpoint.
    pub fn reason(&self) -> String {
        match self {
            NameIssue::FolderMarker => "folder marker".into(),
            NameIssue::OutsidePrefix => "outside the source prefix".into(),
            NameIssue::Invalid(why) => format!("invalid blob name: {why}"),
        }
    }
}

/// Maps `key` to its blob name.
pub fn blob_name(key: &str, source_prefix: &str, target_prefix: &str) -> Result<String, NameIssue> {
    if key.ends_with('/') {
        return Err(NameIssue::FolderMarker);
    }
    let rest = key.strip_prefix(source_prefix).ok_or(NameIssue::OutsidePrefix)?;
    let name = format!("{target_prefix}{rest}");
    validate_blob_name(&name).map_err(NameIssue::Invalid)?;
    Ok(name)
}

/// Checks Azure's blob-name rules: 1..=1024 characters, at most 254 segments, no trailing
/// `.` or `/`, no segment ending in `.` (URL normalisation would rewrite `.` and `..`), and no
/// control characters.
pub fn validate_blob_name(name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars == 0 {
        return Err("empty".into());
    }
    if chars > 1024 {
        return Err(format!("{chars} characters, more than 1024"));
    }
    if name.ends_with('/') {
        return Err("ends with '/'".into());
    }
    if name.ends_with('.') {
        return Err("ends with '.'".into());
    }
    let segments = name.split('/').count();
    if segments > 254 {
        return Err(format!("{segments} path segments, more than 254"));
    }
    if name.split('/').any(|s| s.ends_with('.')) {
        return Err("a path segment ends with '.'".into());
    }
    if name.chars().any(|c| c.is_control()) {
        return Err("contains a control character".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_prefixes() {
        assert_eq!(blob_name("in/a/b.txt", "in/", "out/").unwrap(), "out/a/b.txt");
        assert_eq!(blob_name("a//b", "", "").unwrap(), "a//b");
        assert_eq!(blob_name("x/a", "in/", ""), Err(NameIssue::OutsidePrefix));
        assert_eq!(blob_name("dir/", "", ""), Err(NameIssue::FolderMarker));
    }

    #[test]
    fn rejects_azure_invalid_names() {
        let long = "a".repeat(1025);
        let deep = vec!["a"; 255].join("/");
        for bad in ["a.", "a./b", "./b", "a/../b", long.as_str(), deep.as_str(), "a\u{1}b"] {
            assert!(validate_blob_name(bad).is_err(), "{bad:?}");
        }
        let ok_long = "é".repeat(1024);
        assert!(validate_blob_name(&ok_long).is_ok());
        assert!(validate_blob_name("sp ace+%#?ü").is_ok());
    }
}
