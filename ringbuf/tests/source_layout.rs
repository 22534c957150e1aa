//! The project's rules for its own source, checked over `ringbuf/src`, `cli/src` and `rpc/src`.
//!
//! One concept a file, files short enough to read, and no import cycles: a file depends on the files below
//! it, never (through any chain) on itself, so each can be read, reviewed and moved on its own.
//!
//! - No `.rs` file is longer than [`MAX_LINES`] lines.
//! - Within each crate, the files form no import cycle. The graph is computed textually, the same way
//!   as the reference script `cycles.py`: a file depends on the file that defines what one of its `use`
//!   statements or `crate::`/`super::`/`self::`/child-module paths names, following re-exports
//!   (`pub use x::Y;`) to where `Y` is defined. Comments and a trailing `#[cfg(test)] mod tests { .. }`
//!   do not count: unit tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The source directories checked, relative to the workspace root.
const CRATES: [&str; 3] = ["ringbuf/src", "cli/src", "rpc/src"];
/// The longest a source file may be.
const MAX_LINES: usize = 600;

/// A path as written in the source (`crate::a::B` -> `[crate, a, B]`).
type ModPath = Vec<String>;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Length of the run of word characters that starts `s`.
fn word_len(s: &str) -> usize {
    s.find(|c: char| !is_word(c)).unwrap_or(s.len())
}

/// Every `.rs` file under `root`, as `/`-separated paths relative to it, with its contents.
fn rust_files(root: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
            let entry = entry.expect("directory entry");
            let rel = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.file_type().expect("file type").is_dir() {
                dirs.push((entry.path(), format!("{rel}/")));
            } else if rel.ends_with(".rs") {
                files.insert(rel, fs::read_to_string(entry.path()).expect("source file is UTF-8"));
            }
        }
    }
    files
}

/// Source files of `root` longer than [`MAX_LINES`], with their line counts.
fn long_files(root: &Path) -> Vec<(String, usize)> {
    let lines = rust_files(root).into_iter().map(|(rel, src)| (rel, src.lines().count()));
    lines.filter(|&(_, n)| n > MAX_LINES).collect()
}

/// The source without comments (`//` to the end of the line) and without a unit-test module
/// (from a `#[cfg(..test..)]` followed by `mod tests {` to the end of the file).
fn strip(src: &str) -> String {
    let lines = src.split('\n').map(|line| &line[..line.find("//").unwrap_or(line.len())]);
    let mut out = lines.collect::<Vec<_>>().join("\n");
    if let Some(start) = out.match_indices("#[cfg(").map(|(i, _)| i).find(|&i| opens_test_module(&out[i..])) {
        out.truncate(start);
    }
    out
}

/// Whether `s` starts with `#[cfg(..test..)]`, on one line, then `mod tests {`.
fn opens_test_module(s: &str) -> bool {
    let line = &s[..s.find('\n').unwrap_or(s.len())];
    line.match_indices(")]").any(|(j, _)| {
        let after = s[j + 2..].trim_start();
        line[6..j].contains("test") && after.strip_prefix("mod tests").is_some_and(|r| r.trim_start().starts_with('{'))
    })
}

/// Byte offsets where a word starts in `src`, each with the character before it.
fn word_starts(src: &str) -> Vec<(usize, Option<char>)> {
    let mut prev = None;
    let starts = src.char_indices().map(|(i, c)| (i, c, prev.replace(c)));
    starts
        .filter(|&(_, c, before)| is_word(c) && !before.is_some_and(is_word))
        .map(|(i, _, before)| (i, before))
        .collect()
}

/// Whitespace then a word at the start of `s`: the word, and what follows it.
fn spaced_word(s: &str) -> Option<(&str, &str)> {
    let trimmed = s.trim_start();
    let n = word_len(trimmed);
    (trimmed.len() < s.len() && n > 0).then(|| trimmed.split_at(n))
}

/// Names a file defines: the word after `fn`, `struct`, `enum`, `trait`, `type`, `const`, `static` or
/// `macro_rules!` (matches do not overlap, so `const fn f` defines `fn`, as in the reference).
fn definitions(src: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 8] = ["fn", "struct", "enum", "trait", "type", "const", "static", "macro_rules!"];
    let (mut names, mut from) = (BTreeSet::new(), 0);
    for (i, _) in word_starts(src) {
        let hit = KEYWORDS.iter().find_map(|keyword| src[i..].strip_prefix(keyword).and_then(spaced_word));
        if let Some((name, rest)) = hit.filter(|_| i >= from) {
            names.insert(name.to_string());
            from = src.len() - rest.len();
        }
    }
    names
}

/// The `use` statements of a file (`use word;` or `use word::..;`), expanded into `(path, alias)` pairs.
fn uses(src: &str) -> Vec<(ModPath, String)> {
    let (mut out, mut from) = (Vec::new(), 0);
    for (i, _) in word_starts(src) {
        let Some((word, rest)) = src[i..].strip_prefix("use").and_then(spaced_word).filter(|_| i >= from) else {
            continue;
        };
        let end = if rest.starts_with("::") { rest.find(';') } else { rest.starts_with(';').then_some(0) };
        let Some(end) = end else { continue };
        from = src.len() - rest.len() + end + 1;
        let tree = format!("{word}{}", &rest[..end]);
        expand(&[], &tree.split_whitespace().collect::<Vec<_>>().join(" "), &mut out);
    }
    out
}

/// Expands the use tree `body` (`a::{b, c::d as e}`) under `prefix` into `(path, alias)` pairs.
fn expand(prefix: &[String], body: &str, out: &mut Vec<(ModPath, String)>) {
    // Split at the commas outside braces: the predicate sees every character once, in order.
    let mut depth = 0;
    let items = body.split(|c| {
        depth += i32::from(c == '{') - i32::from(c == '}');
        c == ',' && depth == 0
    });
    for item in items.map(str::trim).filter(|item| !item.is_empty()) {
        let k = item.find(|c: char| c != ':' && !is_word(c)).unwrap_or(item.len());
        if item[k..].starts_with('{') && item[..k].ends_with("::") && item.ends_with('}') {
            let mut inner = prefix.to_vec();
            inner.extend(item[..k - 2].split("::").filter(|s| !s.is_empty()).map(String::from));
            expand(&inner, &item[k + 1..item.len() - 1], out);
        } else if let Some(inner) = item.strip_prefix('{') {
            expand(prefix, &inner[..inner.char_indices().last().map_or(0, |(i, _)| i)], out);
        } else {
            let mut path: ModPath = prefix.to_vec();
            path.extend(item.split("::").map(|s| s.trim().to_string()));
            let last = path.pop().unwrap_or_default();
            let parts: Vec<&str> = last.split(" as ").collect();
            path.push(parts[0].trim().to_string());
            out.push((path, parts[parts.len() - 1].trim().to_string()));
        }
    }
}

/// Every `ident::ident..` path in the code, from the start of a word not preceded by `:`.
fn code_paths(src: &str) -> Vec<ModPath> {
    let starts = word_starts(src).into_iter().filter(|&(_, before)| before != Some(':'));
    let paths = starts.map(|(i, _)| {
        // `word(::word)*`: a segment continues the path only if the one before it was a whole word.
        let mut whole = true;
        let segments = src[i..].split("::").map_while(|segment| {
            let n = word_len(segment);
            let word = (whole && n > 0).then(|| segment[..n].to_string());
            whole = n == segment.len();
            word
        });
        segments.collect::<ModPath>()
    });
    paths.filter(|path| path.len() > 1).collect()
}

/// The module a file is: `a/b.rs` -> `[a, b]`; `a/mod.rs`, `lib.rs` and `main.rs` -> their directory's.
fn module_of(rel: &str) -> ModPath {
    let mut module: ModPath = rel.strip_suffix(".rs").unwrap_or(rel).split('/').map(String::from).collect();
    if module.last().is_some_and(|last| ["mod", "lib", "main"].contains(&last.as_str())) {
        module.pop();
    }
    module
}

/// One crate's files: by module, and for each file its code, the names it defines and its `use`s.
struct Crate {
    files: BTreeMap<ModPath, String>,
    code: BTreeMap<String, String>,
    defined: BTreeMap<String, BTreeSet<String>>,
    uses: BTreeMap<String, Vec<(ModPath, String)>>,
}

/// Dependencies between files: file -> the files it uses.
type Edges<'a> = BTreeMap<&'a String, BTreeSet<&'a String>>;

impl Crate {
    fn read(root: &Path) -> Self {
        let (mut files, mut code) = (BTreeMap::new(), BTreeMap::new());
        for (rel, src) in rust_files(root) {
            // Two files for one module (`lib.rs` and `main.rs`): the last one read stands for it.
            if let Some(shadowed) = files.insert(module_of(&rel), rel.clone()) {
                code.remove(&shadowed);
            }
            code.insert(rel, strip(&src));
        }
        let defined = code.iter().map(|(rel, src)| (rel.clone(), definitions(src))).collect();
        let uses = code.iter().map(|(rel, src)| (rel.clone(), uses(src))).collect();
        Crate { files, code, defined, uses }
    }

    /// The file that defines what `path`, written in `file`, names; `None` if outside the crate.
    fn resolve(&self, file: &str, path: &[String], depth: usize) -> Option<&String> {
        let first = path.first().filter(|_| depth <= 20)?;
        let module = module_of(file);
        let (mut module, mut rest) = match first.as_str() {
            "crate" => (vec![], &path[1..]),
            "self" => (module, &path[1..]),
            "super" => (module[..module.len().saturating_sub(1)].to_vec(), &path[1..]),
            _ if self.files.contains_key(&[&module[..], &path[..1]].concat()) => (module, path),
            _ => return None,
        };
        while rest.first().is_some_and(|s| s == "super") {
            module.pop();
            rest = &rest[1..];
        }
        // Down the modules named, as long as each has a file.
        while let Some(child) = rest.first().map(|s| [&module[..], std::slice::from_ref(s)].concat()) {
            if !self.files.contains_key(&child) {
                break;
            }
            (module, rest) = (child, &rest[1..]);
        }
        let target = self.files.get(&module)?;
        match rest.first() {
            // An item the file does not define: follow a `use` that brings it in under that name.
            Some(name) if name != "*" && !self.defined[target].contains(name) => self.uses[target]
                .iter()
                .filter(|(used, alias)| alias == name && used.last().is_some_and(|s| s != "*"))
                .find_map(|(used, _)| self.resolve(target, used, depth + 1))
                .or(Some(target)),
            _ => Some(target),
        }
    }

    /// Each file -> the other files its `use`s and paths resolve to.
    fn edges(&self) -> Edges<'_> {
        let mut edges: Edges = BTreeMap::new();
        for (file, code) in &self.code {
            let used = self.uses[file].iter().map(|(path, _)| path.clone());
            for path in used.chain(code_paths(code)) {
                if let Some(target) = self.resolve(file, &path, 0).filter(|&target| target != file) {
                    edges.entry(file).or_default().insert(target);
                }
            }
        }
        edges
    }
}

/// Tarjan's algorithm from `v`: appends to `out` each strongly connected component it completes.
fn tarjan<'a>(
    v: &'a String,
    edges: &Edges<'a>,
    low: &mut BTreeMap<&'a String, usize>,
    stack: &mut Vec<&'a String>,
    out: &mut Vec<Vec<&'a String>>,
) {
    let index = low.len();
    low.insert(v, index);
    stack.push(v);
    for &w in edges.get(v).into_iter().flatten() {
        if !low.contains_key(w) {
            tarjan(w, edges, low, stack, out);
        }
        if stack.contains(&w) {
            low.insert(v, low[v].min(low[w]));
        }
    }
    if low[v] == index {
        let at = stack.iter().position(|&w| w == v).expect("v is on the stack");
        out.push(stack.split_off(at));
    }
}

/// The import cycles of the crate at `root` (strongly connected components of more than one file),
/// each described with the edges inside it.
fn import_cycles(root: &Path) -> Vec<String> {
    let krate = Crate::read(root);
    let edges = krate.edges();
    let (mut low, mut components) = (BTreeMap::new(), Vec::new());
    for file in krate.code.keys() {
        if !low.contains_key(file) {
            tarjan(file, &edges, &mut low, &mut Vec::new(), &mut components);
        }
    }
    let describe = |component: Vec<&String>| {
        let component: BTreeSet<_> = component.into_iter().collect();
        let mut text = format!("cycle: {}", component.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(" "));
        for &file in &component {
            let inside = edges[file].iter().filter(|&t| component.contains(t)).map(|t| t.as_str());
            text += &format!("\n    {file} -> {}", inside.collect::<Vec<_>>().join(" "));
        }
        text
    };
    components.into_iter().filter(|c| c.len() > 1).map(describe).collect()
}

#[test]
fn no_source_file_is_longer_than_600_lines() {
    let mut offenders = Vec::new();
    for dir in CRATES {
        offenders.extend(long_files(&workspace_root().join(dir)).into_iter().map(|(f, n)| format!("{dir}/{f}: {n}")));
    }
    assert!(offenders.is_empty(), "files longer than {MAX_LINES} lines:\n{}", offenders.join("\n"));
}

#[test]
fn no_import_cycle_between_source_files() {
    let mut cycles = Vec::new();
    for dir in CRATES {
        cycles.extend(import_cycles(&workspace_root().join(dir)).into_iter().map(|cycle| format!("{dir}: {cycle}")));
    }
    assert!(cycles.is_empty(), "import cycles between source files:\n{}", cycles.join("\n"));
}

/// A crate written to a fresh temporary directory, removed when dropped (even if the test fails).
struct TempCrate(PathBuf);

impl TempCrate {
    fn new(name: &str, files: &[(&str, &str)]) -> Self {
        let krate =
            TempCrate(std::env::temp_dir().join(format!("shmring-source-layout-{name}-{}", std::process::id())));
        for (rel, src) in files {
            fs::create_dir_all(krate.0.join(rel).parent().expect("a parent")).expect("create temp dir");
            fs::write(krate.0.join(rel), src).expect("write temp file");
        }
        krate
    }
}

impl Drop for TempCrate {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn checker_finds_a_cycle_through_a_reexport_and_ignores_unit_tests() {
    let krate = TempCrate::new(
        "cycle",
        &[
            ("lib.rs", "mod a;\nmod b;\nmod c;\npub use a::Y;\n"),
            ("a.rs", "use crate::b::X; // b.rs uses a.rs back through the re-export in lib.rs\npub struct Y;\n"),
            ("b.rs", "pub struct X;\npub fn f(_: crate::Y) {}\n"),
            ("c.rs", "pub struct Z;\n#[cfg(test)]\nmod tests {\n    use crate::b::X;\n}\n"),
        ],
    );
    assert_eq!(import_cycles(&krate.0), ["cycle: a.rs b.rs\n    a.rs -> b.rs\n    b.rs -> a.rs"]);
    assert!(long_files(&krate.0).is_empty());
    fs::write(krate.0.join("c.rs"), "fn f() {}\n".repeat(MAX_LINES + 1)).expect("write long file");
    assert_eq!(long_files(&krate.0), [("c.rs".to_string(), MAX_LINES + 1)]);
}

#[test]
fn checker_accepts_a_crate_without_cycles() {
    let krate = TempCrate::new(
        "acyclic",
        &[
            ("lib.rs", "mod a;\nmod b;\npub use a::Y;\n"),
            ("a/mod.rs", "mod inner;\npub use inner::Y;\n"),
            ("a/inner.rs", "use crate::b::X;\npub struct Y(X);\nuse super::super::b;\n"),
            ("b.rs", "pub struct X;\n#[cfg(test)]\nmod tests {\n    use crate::Y;\n}\n"),
        ],
    );
    assert_eq!(import_cycles(&krate.0), Vec::<String>::new());
    assert!(long_files(&krate.0).is_empty());
}
