//! The architecture: the source tree is in layers, each module imports only from the layers
//! below its own, and no two source files import each other in a cycle. The table of layers is
//! written here once; `docs/decisions.md` ("Architecture") explains it.

use std::path::Path;

use crate::harness::rust_files;

/// The layers, lowest first. A module may import from a lower layer, and from its own
/// module; within `base` and `adapters` also sideways. The two cloud backends do not import
/// each other.
const LAYERS: [(&str, &[&str]); 6] = [
    (
        "base",
        &[
            "error",
            "retry",
            "redact",
            "audit",
            "config",
            "model",
            "messages",
            "checksum",
            "http",
            "internal_events",
        ],
    ),
    ("clouds", &["aws", "azure"]),
    ("state", &["state"]),
    ("engine", &["engine"]),
    ("app", &["app"]),
    (
        "adapters",
        &["functions", "cli", "telemetry", "proptests", "lib", "main"],
    ),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, ms)| ms.contains(&module))
}

/// The top-level module (its layer's unit) of a module path; the crate root is `lib`.
fn top(module: &str) -> &str {
    match module.split("::").next().unwrap_or(module) {
        "crate" => "lib",
        t => t,
    }
}

/// The imports of `module` (its `code`) that point to a layer above its own, as
/// `module -> import`.
fn upward_imports(module: &str, code: &str, modules: &Modules) -> Vec<String> {
    let me = top(module);
    let my_layer = layer_of(me).unwrap_or_else(|| panic!("module `{me}` is in no layer; add it to LAYERS"));
    let sideways_ok = matches!(LAYERS[my_layer].0, "base" | "adapters");
    let mut out = Vec::new();
    for dep in file_imports(module, code, modules) {
        let dep_top = top(&dep);
        if dep_top == me {
            continue;
        }
        // Items defined in lib.rs (AppState) belong to the adapters.
        let dep_layer = layer_of(dep_top).unwrap_or(LAYERS.len() - 1);
        if !(dep_layer < my_layer || (dep_layer == my_layer && sideways_ok)) {
            out.push(format!("{module} -> {dep}"));
        }
    }
    out
}

/// Every module imports only from below its layer, through `crate::` or `super::` paths
/// alike (`super::super::app` from `engine::copy` is as upward as `crate::app`), unit tests
/// included.
#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let modules = source_modules();
    // The check itself sees an upward import whichever way it is spelled.
    for spelled in [
        "use crate::app::AppState;",
        "use super::super::app::AppState;",
        "use crate::{error::Result, app};",
    ] {
        assert_eq!(
            upward_imports("engine::copy", spelled, &modules),
            ["engine::copy -> app"],
            "{spelled}"
        );
    }
    assert!(upward_imports(
        "engine::copy",
        "use super::decide::is_current; use crate::state::checkpoint;",
        &modules
    )
    .is_empty());
    let violations = every_module(&modules, upward_imports);
    assert!(
        violations.is_empty(),
        "imports from a layer above (module -> import; layers low to high: {}):\n{}",
        LAYERS.map(|(n, _)| n).join(" < "),
        violations.join("\n")
    );
}

/// The modules of `module`'s imports (its `code`) that reach Table Storage while its layer
/// does not own rows: only `state` (and `azure`, which holds the client) may name
/// `azure::table`, so every stored row has its one owner in `state`.
fn table_imports(module: &str, code: &str, modules: &Modules) -> Vec<String> {
    if matches!(top(module), "state" | "azure") {
        return Vec::new();
    }
    file_imports(module, code, modules)
        .into_iter()
        .filter(|d| d == "azure::table" || d.starts_with("azure::table::"))
        .map(|d| format!("{module} -> {d}"))
        .collect()
}

/// Only `state` names the Table client, whether to import it or to build one: the engine,
/// the app and the adapters get typed stores.
#[test]
fn only_the_state_layer_names_table_storage() {
    let modules = source_modules();
    for spelled in [
        "use crate::azure::table::TableClient;",
        "let t = crate::azure::table::TableClient::new(&a, &b, \"objects\", r)?;",
        "use crate::azure::{blob::BlobTarget, table::Entity};",
    ] {
        assert_eq!(
            table_imports("engine::split", spelled, &modules),
            ["engine::split -> azure::table"],
            "{spelled}"
        );
    }
    assert!(table_imports("state::staging", "use crate::azure::table::TableClient;", &modules).is_empty());
    let violations = every_module(&modules, table_imports);
    assert!(
        violations.is_empty(),
        "Table Storage named outside `state` (give the module a store from `state/` instead):\n{}",
        violations.join("\n")
    );
}

/// What `check` finds in every source file, its unit tests included: a unit test module is
/// its file's child, so `super::` in it names the file's module.
fn every_module(modules: &Modules, check: fn(&str, &str, &Modules) -> Vec<String>) -> Vec<String> {
    modules
        .iter()
        .flat_map(|(m, src)| {
            let mut v = check(m, &src.code, modules);
            v.extend(check(&format!("{m}::tests"), &src.tests, modules));
            v
        })
        .collect()
}

/// The source files by module path (`engine::copy`; `crate` for lib.rs and main.rs).
type Modules = std::collections::BTreeMap<String, Source>;

/// A source file's text, comments dropped: its code, and its unit tests (from
/// `#[cfg(test)]` on, where `super` is the file's own module).
#[derive(Default)]
struct Source {
    code: String,
    tests: String,
}

/// Every source file as its module path.
fn source_modules() -> Modules {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = std::collections::BTreeMap::new();
    for p in rust_files(&root) {
        let rel = p.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
        let module = match rel.trim_end_matches(".rs") {
            "lib" | "main" => "crate".to_string(),
            r => r.trim_end_matches("/mod").replace('/', "::"),
        };
        let text = std::fs::read_to_string(&p).unwrap();
        let strip = |t: &str| {
            t.lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let (code, tests) = text.split_once("#[cfg(test)]").unwrap_or((&text, ""));
        // lib.rs and main.rs are both the root; keep both texts.
        let e: &mut Source = out.entry(module).or_default();
        e.code.push_str(&strip(code));
        e.tests.push_str(&strip(tests));
    }
    out
}

/// The source files (modules) that module `me` names through `crate::` and `super::` paths
/// (one level of `{…}` groups included).
fn file_imports(me: &str, code: &str, modules: &Modules) -> std::collections::BTreeSet<String> {
    let own: Vec<&str> = me.split("::").filter(|s| *s != "crate").collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = std::collections::BTreeSet::new();
    // The longest prefix of `base` + `path` that names a source file.
    let mut add = |base: &[&str], path: &[&str]| {
        for n in (0..=path.len()).rev() {
            let mut cand = base.to_vec();
            cand.extend_from_slice(&path[..n]);
            let name = if cand.is_empty() {
                "crate".to_string()
            } else {
                cand.join("::")
            };
            if modules.contains_key(&name) {
                if name != me {
                    out.insert(name);
                }
                return;
            }
        }
    };
    let mut prev = ' ';
    for (i, c) in code.char_indices() {
        let at = &code[i..];
        let starts = !(ident(prev) || prev == ':') && (at.starts_with("crate::") || at.starts_with("super::"));
        prev = c;
        if !starts {
            continue;
        }
        let mut base: Vec<&str> = Vec::new();
        let mut tail = at;
        if let Some(t) = tail.strip_prefix("crate::") {
            tail = t;
        } else {
            // `super` is the parent of this module (a `mod.rs` file is its directory's module).
            base = own.clone();
            while let Some(t) = tail.strip_prefix("super::") {
                base.pop();
                tail = t;
            }
        }
        let path_text: String = tail.chars().take_while(|&c| ident(c) || c == ':').collect();
        let path: Vec<&str> = path_text.split("::").filter(|s| !s.is_empty()).collect();
        let after = &tail[path_text.len()..];
        match after.strip_prefix('{') {
            Some(group) => {
                let mut prefix = base.clone();
                prefix.extend_from_slice(&path);
                for part in group.split('}').next().unwrap_or("").split(',') {
                    let inner: Vec<&str> = part
                        .trim()
                        .split("::")
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .collect();
                    add(&prefix, &inner);
                }
            }
            None => add(&base, &path),
        }
    }
    out
}

/// No two source files import each other, directly or through others: each file can be
/// read knowing only the files below it. Fails naming one cycle.
#[test]
fn no_source_files_import_each_other_in_a_cycle() {
    let modules = source_modules();
    let graph: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = modules
        .iter()
        .map(|(m, src)| (m.clone(), file_imports(m, &src.code, &modules)))
        .collect();
    // Depth-first search; a node met again while still on the path closes a cycle.
    fn visit(
        n: &str,
        graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        state: &mut std::collections::BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for d in graph.get(n).into_iter().flatten() {
            match state.get(d.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|p| p == d).unwrap();
                    let mut cycle = path[start..].to_vec();
                    cycle.push(d.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(d, graph, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = std::collections::BTreeMap::new();
    for m in graph.keys() {
        if state.get(m.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(cycle) = visit(m, &graph, &mut state, &mut Vec::new()) {
                panic!("source files import each other in a cycle: {}", cycle.join(" -> "));
            }
        }
    }
    // The reader must see the imports at all: the engine's orchestration uses `decide`.
    assert!(
        graph["engine::copy"].contains("engine::decide"),
        "{:?}",
        graph["engine::copy"]
    );
    assert!(
        graph["app::finish"].contains("app::service"),
        "{:?}",
        graph["app::finish"]
    );
}
