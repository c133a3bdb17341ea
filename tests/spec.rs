//! The contract inside the repository (`docs/spec/`): every `§`, K and D citation of the code
//! resolves in it, no comment names a work item instead of what it means, and — when the shared
//! contract sits beside the clone (`../shared/spec`) — the copy is identical to it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The section numbers of COMPAT.md: `## 5. Endpoints` → "5", `### 5.4 …` → "5.4".
fn sections(compat: &str) -> BTreeSet<String> {
    compat
        .lines()
        .filter(|l| l.starts_with('#'))
        .filter_map(|l| {
            let number = l.trim_start_matches('#').split_whitespace().next()?;
            let number = number.trim_end_matches('.');
            number
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.')
                .then(|| number.to_string())
        })
        .collect()
}

/// `§5.4`, `§11.1` … in `text` (not those of an RFC on the same line).
fn citations(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.contains("RFC") {
            continue;
        }
        for (i, _) in line.match_indices('§') {
            let number: String = line[i + '§'.len_utf8()..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let number = number.trim_end_matches('.').to_string();
            if !number.is_empty() {
                out.push((n + 1, number));
            }
        }
    }
    out
}

/// Rule ids (`K12`, `D6`) in `text`, as whole words.
fn rule_ids(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        if (*b == b'K' || *b == b'D') && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            let digits: String = text[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            let after = bytes.get(i + 1 + digits.len());
            if !digits.is_empty() && !after.is_some_and(|a| a.is_ascii_alphanumeric() || *a == b'_')
            {
                out.push(format!("{}{digits}", *b as char));
            }
        }
    }
    out
}

#[test]
fn every_citation_resolves_in_the_contract_inside_the_repository() {
    let compat = std::fs::read_to_string(root().join("docs/spec/COMPAT.md"))
        .expect("docs/spec/COMPAT.md: the contract is part of the repository");
    let known = sections(&compat);
    let rules: BTreeSet<String> = rule_ids(&compat).into_iter().collect();
    assert!(known.contains("11.1") && known.contains("0.1"), "{known:?}");
    assert!(rules.contains("K15") && rules.contains("D11"), "{rules:?}");

    let mut files = Vec::new();
    for dir in ["src", "tests"] {
        rust_files(&root().join(dir), &mut files);
    }
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let rel = file.strip_prefix(root()).unwrap().display().to_string();
        for (line, number) in citations(&text) {
            if !known.contains(&number) {
                broken.push(format!("{rel}:{line}: §{number}"));
            }
        }
        for id in rule_ids(&text) {
            // Only the contract's own families: K1–K15, D1–D11.
            let n: u32 = id[1..].parse().unwrap_or(0);
            let in_family = (id.starts_with('K') && n <= 15) || (id.starts_with('D') && n <= 11);
            if in_family && !rules.contains(&id) {
                broken.push(format!("{rel}: {id}"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "citations that do not resolve in docs/spec/COMPAT.md: {broken:#?}"
    );
}

#[test]
fn comments_say_what_they_mean_not_which_work_item() {
    let mut files = Vec::new();
    for dir in ["src", "tests", "fuzz"] {
        rust_files(&root().join(dir), &mut files);
    }
    let mut named = Vec::new();
    for file in files.iter().filter(|f| !f.ends_with("tests/spec.rs")) {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let lower = line.to_ascii_lowercase();
            let issue_number = lower
                .match_indices("issue ")
                .any(|(i, _)| lower[i + 6..].starts_with(|c: char| c.is_ascii_digit()));
            // "the Operability issue", "the performance issue"
            let issue_name = lower.contains(" issue)")
                || lower.contains(" issue:")
                || lower
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .windows(3)
                    .any(|w| w[0] == "the" && w[2].starts_with("issue") && w[1] != "same");
            if (issue_number || issue_name) && !lower.contains("github") {
                named.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(named.is_empty(), "comments naming a work item: {named:#?}");
}

#[test]
fn the_copy_of_the_contract_is_the_shared_one() {
    let shared = root().join("../shared/spec");
    if !shared.is_dir() {
        // A clone without ../shared beside it: the copy is all there is.
        return;
    }
    for file in ["COMPAT.md", "SCHEMA.md", "TOKENS.md"] {
        let ours = std::fs::read(root().join("docs/spec").join(file)).unwrap();
        let theirs = std::fs::read(shared.join(file)).unwrap();
        assert!(
            ours == theirs,
            "docs/spec/{file} differs from ../shared/spec/{file}: copy it again (docs/spec/README.md)"
        );
    }
    for (ours, theirs) in [
        ("schema/shop.sql", "schema.sql"),
        ("fixtures/fixtures.sql", "fixtures.sql"),
    ] {
        assert!(
            std::fs::read(root().join(ours)).unwrap()
                == std::fs::read(shared.join(theirs)).unwrap(),
            "{ours} differs from ../shared/spec/{theirs}"
        );
    }
}
