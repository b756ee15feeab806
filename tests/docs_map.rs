//! The map stays true: every file path and every Rust, WGSL or test item that `README.md` and the
//! docs name in `code` must exist (the tidy-test pattern of rust-analyzer). A renamed function or a
//! moved file fails here with the document and the name, instead of leaving a stale map.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The documents the test holds to the code.
const DOCS: [&str; 7] = [
    "README.md",
    "docs/ARCHITECTURE.md",
    "docs/MODELS.md",
    "docs/PERFORMANCE.md",
    "docs/TESTING.md",
    "docs/TROUBLESHOOTING.md",
    "docs/PLAN_FORMAT.md",
];

/// Every `code span` of a Markdown text (fenced blocks excluded: they hold commands and modules).
fn code_spans(text: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut rest = line;
        while let Some(a) = rest.find('`') {
            let after = &rest[a + 1..];
            let Some(b) = after.find('`') else { break };
            spans.push(after[..b].to_string());
            rest = &after[b + 1..];
        }
    }
    spans
}

/// Every source file's text (Rust, WGSL, JavaScript, scripts) with its path.
fn sources() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = [
        "src", "tests", "shaders", "examples", "benches", "web", "scripts",
    ]
    .iter()
    .map(|d| root().join(d))
    .collect();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            if p.is_dir() {
                if name != "node_modules" && !name.starts_with("plan") && name != "fixtures" {
                    stack.push(p);
                }
            } else if [".rs", ".wgsl", ".mjs", ".js", ".py", ".sh"]
                .iter()
                .any(|x| name.ends_with(x))
                && let Ok(t) = std::fs::read_to_string(&p)
            {
                out.push((p, t));
            }
        }
    }
    out
}

/// Names defined anywhere in the sources: functions, types, constants, modules, enum variants,
/// WGSL entry points, `backend_test!` tests, JavaScript functions.
fn definitions(sources: &[(PathBuf, String)]) -> HashSet<String> {
    let mut names = HashSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (path, text) in sources {
        if let Some(stem) = path.file_stem() {
            names.insert(stem.to_string_lossy().to_string());
        }
        for line in text.lines() {
            let t = line.trim_start();
            let t = t
                .strip_prefix("pub(crate) ")
                .or_else(|| t.strip_prefix("pub "))
                .unwrap_or(t);
            let t = t.strip_prefix("async ").unwrap_or(t);
            let t = t.strip_prefix("export ").unwrap_or(t);
            for kw in [
                "fn ",
                "struct ",
                "enum ",
                "trait ",
                "type ",
                "const ",
                "static ",
                "mod ",
                "function ",
                "macro_rules! ",
                "override ",
                "var<workgroup> ",
                "class ",
                "def ",
            ] {
                if let Some(rest) = t.strip_prefix(kw) {
                    names.insert(ident(rest));
                }
            }
            if let Some(rest) = t.strip_prefix("backend_test!(") {
                names.insert(ident(rest));
            }
            // Enum variants and struct fields: `Name,` / `Name(…)` / `name: Type` at the start
            // of a line.
            let id = ident(t);
            if !id.is_empty() {
                let after = &t[id.len()..];
                if after.starts_with(',')
                    || after.starts_with('(')
                    || after.starts_with(" {")
                    || after.starts_with(':')
                    || after.starts_with(" =")
                {
                    names.insert(id);
                }
            }
        }
    }
    names
}

/// A span that names a file or folder of the repository (`src/model/gpu.rs`, `kernels/conv.rs`,
/// `shaders/`), as opposed to a command, a flag or a message.
fn as_path(span: &str) -> Option<&str> {
    let exts = [
        ".rs",
        ".wgsl",
        ".md",
        ".py",
        ".sh",
        ".mjs",
        ".js",
        ".json",
        ".toml",
        ".png",
        ".txt",
        ".safetensors",
    ];
    let plain = span
        .chars()
        .all(|c| c.is_alphanumeric() || "_-./".contains(c));
    let looks =
        span.contains('/') && (exts.iter().any(|e| span.ends_with(e)) || span.ends_with('/'));
    // Paths a run writes or a user supplies are not the repository's.
    let elsewhere = [
        "runs/",
        "report/",
        "pics",
        "data/shapes",
        "my_images",
        "/tmp",
        "/dev",
        "/usr",
        "~",
        "target/",
        "node_modules",
        "plan",
        "from_torch",
        "back.safetensors",
        "train/",
        "test/",
        "val/",
    ];
    (plain
        && looks
        && !elsewhere
            .iter()
            .any(|e| span.starts_with(e) || span.contains("/X/")))
    .then_some(span)
}

/// A span that names Rust or WGSL items: `GpuVae::plan_step`, `cpu::ops::conv_to_lo`,
/// `layer_forward(l, x, y, act)`, `model_parity::{a, b}`: the item names to look up.
fn as_items(span: &str) -> Vec<String> {
    let head = span.split('(').next().unwrap_or("").trim();
    let is_item_path = head.contains("::")
        && head
            .chars()
            .all(|c| c.is_alphanumeric() || "_:{}, ".contains(c));
    let is_call = span.contains('(')
        && head.contains('_')
        && head
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !is_item_path && !is_call {
        return Vec::new();
    }
    // `a::b::{c, d}` names c and d; `A::b` names b (and A).
    let mut names = Vec::new();
    if let Some(open) = head.find('{') {
        let inner = head[open + 1..].trim_end_matches('}');
        names.extend(inner.split(',').map(|s| s.trim().to_string()));
        names.extend(
            head[..open]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from),
        );
    } else {
        names.extend(head.split("::").filter(|s| !s.is_empty()).map(String::from));
    }
    names
        .into_iter()
        .filter(|n| {
            !n.is_empty()
                && ![
                    "crate", "self", "super", "std", "wgpu", "nn", "torch", "rand", "usize",
                ]
                .contains(&n.as_str())
        })
        // PyTorch's API, which the docs name where they show interop.
        .filter(|n| !["load_state_dict", "state_dict", "lr_lambda"].contains(&n.as_str()))
        .collect()
}

/// The stale ones of `names` (`(where, span, folder)`: the file that names it, the code span,
/// the folder its relative paths start from), and how many names were checked: a path must exist
/// relative to the root, `src/`, `web/` or that folder, or be the tail of a repository path; an
/// item must be defined somewhere in the sources.
fn stale(
    sources: &[(PathBuf, String)],
    names: impl IntoIterator<Item = (String, String, PathBuf)>,
) -> (Vec<String>, usize) {
    let defs = definitions(sources);
    let all_paths: Vec<String> = sources
        .iter()
        .map(|(p, _)| p.to_string_lossy().replace('\\', "/"))
        .collect();
    let mut missing = Vec::new();
    let mut checked = 0;
    for (place, span, base) in names {
        if let Some(p) = as_path(&span) {
            checked += 1;
            // Relative to the root, to `src/`, to the naming file, or the tail of any path of
            // the repository (`matmul/mod.rs` in the kernels' table).
            let p = p.trim_end_matches('/');
            let found = [
                root().to_path_buf(),
                root().join("src"),
                root().join("web"),
                base,
            ]
            .iter()
            .any(|dir| dir.join(p).exists())
                || all_paths
                    .iter()
                    .any(|q| q.ends_with(&format!("/{p}")) || q.contains(&format!("/{p}/")));
            if !found {
                missing.push(format!("{place}: the path `{span}` does not exist"));
            }
            continue;
        }
        for name in as_items(&span) {
            checked += 1;
            if !defs.contains(&name) {
                missing.push(format!(
                    "{place}: `{span}` names `{name}`, defined nowhere in the sources"
                ));
            }
        }
    }
    (missing, checked)
}

#[test]
fn every_path_and_item_the_docs_name_exists() {
    let sources = sources();
    let mut names = Vec::new();
    for doc in DOCS {
        let text =
            std::fs::read_to_string(root().join(doc)).unwrap_or_else(|e| panic!("{doc}: {e}"));
        let base = root().join(doc).parent().unwrap().to_path_buf();
        names.extend(
            code_spans(&text)
                .into_iter()
                .map(|s| (doc.to_string(), s, base.clone())),
        );
    }
    let (missing, checked) = stale(&sources, names);
    assert!(
        missing.is_empty(),
        "{} of {checked} names in the docs are stale:\n{}",
        missing.len(),
        missing.join("\n")
    );
    eprintln!("{checked} paths and items named in the docs exist");
}

#[test]
fn the_checker_finds_a_stale_name() {
    // The checker itself can fail: a made-up function and a made-up file are reported.
    let defs = definitions(&sources());
    assert!(
        as_items("GpuVae::plan_step")
            .iter()
            .all(|n| defs.contains(n))
    );
    assert!(
        !as_items("GpuVae::plan_everything")
            .iter()
            .all(|n| defs.contains(n))
    );
    assert_eq!(as_path("src/model/gone.rs"), Some("src/model/gone.rs"));
    assert!(!root().join("src/model/gone.rs").exists());
    assert_eq!(as_path("--conv 32,64"), None);
    let (missing, checked) = stale(
        &sources(),
        [
            "GpuVae::plan_everything",
            "src/model/gone.rs",
            "GpuVae::plan_step",
        ]
        .map(|s| ("here".to_string(), s.to_string(), root().to_path_buf())),
    );
    assert_eq!((missing.len(), checked), (2, 5), "{missing:?}");
}

/// The text of every `.rs` file under `dir` (recursively), with its path.
fn rust_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let t = std::fs::read_to_string(&p).unwrap();
                out.push((p, t));
            }
        }
    }
    out
}

/// The lines of `files` that name `module` (comments included: a doc link is a dependency too).
fn naming(files: &[(PathBuf, String)], module: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for (p, t) in files {
        for (i, line) in t.lines().enumerate() {
            if line.contains(module) {
                hits.push(format!("{}:{}: {}", p.display(), i + 1, line.trim()));
            }
        }
    }
    hits
}

/// ARCHITECTURE.md's import rules, checked: the kernels and the optimizers know nothing of the
/// model (the likelihood codes they need are `ops`'), and `gpu/` knows neither.
#[test]
fn imports_go_downward_only() {
    let src = root().join("src");
    let kernels = rust_files(&src.join("kernels"));
    assert!(kernels.len() > 10, "src/kernels read");
    let mut bad = naming(&kernels, "crate::model");
    let optim = vec![(
        src.join("optim.rs"),
        std::fs::read_to_string(src.join("optim.rs")).unwrap(),
    )];
    bad.extend(naming(&optim, "crate::model"));
    let gpu = rust_files(&src.join("gpu"));
    bad.extend(naming(&gpu, "crate::model"));
    bad.extend(naming(&gpu, "crate::kernels"));
    assert!(
        bad.is_empty(),
        "imports against the map:\n{}",
        bad.join("\n")
    );
}

/// ARCHITECTURE.md promises that a layer kind without its own planning code is a compile error:
/// every function that reaches a kind's module (`src/model/layers/mod.rs`) matches on the kind
/// with an arm per `LayerKind` variant and no wildcard, and nothing else plans by kind.
#[test]
fn every_layer_kind_reaches_the_planner_through_its_own_arm() {
    let text = std::fs::read_to_string(root().join("src/model/layers/mod.rs")).unwrap();
    let variants: Vec<String> = {
        let at = text
            .find("pub enum LayerKind {")
            .expect("pub enum LayerKind");
        let body = &text[at..at + text[at..].find("\n}").unwrap()];
        body.lines()
            .skip(1)
            .map(str::trim)
            .filter(|l| !l.starts_with("//") && !l.is_empty())
            .map(|l| {
                l.chars()
                    .take_while(|c| c.is_alphanumeric())
                    .collect::<String>()
            })
            .collect()
    };
    assert_eq!(
        variants,
        [
            "Linear",
            "Conv2d",
            "ConvTranspose2d",
            "GroupNorm",
            "PixelLinear"
        ]
    );
    for f in [
        "fn layer_forward(",
        "fn layer_backward(",
        "fn cpu_forward(",
        "fn cpu_backward(",
        "fn weight_shape(",
        "fn bias_len(",
    ] {
        let at = text
            .find(f)
            .unwrap_or_else(|| panic!("layers/mod.rs lacks {f}"));
        let body = &text[at..at + text[at..].find("\n}").unwrap_or(text.len() - at)];
        let body = &body[..body.find("\n    }\n").map_or(body.len(), |e| e + 6)];
        assert!(body.contains(".kind {"), "{f} does not match on the kind");
        for v in &variants {
            assert!(
                body.contains(&format!("LayerKind::{v}")),
                "{f} has no arm of its own for LayerKind::{v}"
            );
        }
        assert!(!body.contains("_ =>"), "{f} has a wildcard arm");
    }
    // The planner and the CPU twin reach kinds only through those functions.
    for file in ["src/model/gpu.rs", "src/cpu/model.rs"] {
        let t = std::fs::read_to_string(root().join(file)).unwrap();
        assert!(
            !t.contains("conv_shape(") && !t.contains("LayerKind::Conv"),
            "{file} plans by kind itself"
        );
    }
}

/// Docs describe the software as it is, each figure with its adapter and command: no narrative
/// of sessions or of earlier measurements (Reliability IV's guard).
#[test]
fn the_docs_tell_no_story_of_sessions() {
    let phrases = [
        "this session",
        "last session",
        "previous session",
        "earlier session",
        "this vm",
        "an earlier measurement",
        "earlier measurements",
        "we measured",
    ];
    let mut found = Vec::new();
    for doc in DOCS.iter().chain(&["web/README.md"]) {
        let text = std::fs::read_to_string(root().join(doc)).unwrap();
        for (i, line) in text.lines().enumerate() {
            let l = line.to_lowercase();
            for p in phrases {
                if l.contains(p) {
                    found.push(format!("{doc}:{}: '{p}' in: {}", i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "narrative in the docs:\n{}",
        found.join("\n")
    );
}

/// The body of each `fn` in `text` (its first line's number, its name, its length in lines),
/// found by counting braces outside strings, characters and comments.
fn function_lengths(text: &str) -> Vec<(usize, String, usize)> {
    // A line without string or character literals and comments, for brace counting.
    fn code(line: &str) -> String {
        let (mut out, mut chars) = (String::new(), line.chars().peekable());
        while let Some(c) = chars.next() {
            match c {
                '/' if chars.peek() == Some(&'/') => break,
                '"' => {
                    while let Some(d) = chars.next() {
                        match d {
                            '\\' => {
                                chars.next();
                            }
                            '"' => break,
                            _ => {}
                        }
                    }
                }
                // A character literal ('{', '\''), not a lifetime ('a).
                '\'' if matches!(chars.clone().nth(1), Some('\'')) => {
                    chars.nth(1);
                }
                '\'' if chars.peek() == Some(&'\\') => {
                    for d in chars.by_ref() {
                        if d == '\'' {
                            break;
                        }
                    }
                }
                c => out.push(c),
            }
        }
        out
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        let Some(at) = t.find("fn ") else { continue };
        let before = &t[..at];
        let is_item = before.split_whitespace().all(|w| {
            matches!(w, "pub" | "const" | "async" | "unsafe" | "extern") || w.starts_with("pub(")
        });
        if !is_item {
            continue;
        }
        let name: String = t[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let (mut depth, mut started) = (0i64, false);
        for (j, l) in lines.iter().enumerate().skip(i) {
            let c = code(l);
            if !started && c.contains(';') && !c.contains('{') {
                break;
            }
            for ch in c.chars() {
                match ch {
                    '{' => {
                        depth += 1;
                        started = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if started && depth == 0 {
                found.push((i + 1, name.clone(), j - i + 1));
                break;
            }
        }
    }
    found
}

/// The engine's functions each read as one idea: none in `src/` is longer than 150 lines (a
/// longer one is split into its steps, as `cli/train.rs`'s run and `checkpoint.rs`'s reader).
#[test]
fn no_function_in_src_is_longer_than_150_lines() {
    const MAX: usize = 150;
    let mut long = Vec::new();
    for (path, text) in rust_files(&root().join("src")) {
        for (line, name, len) in function_lengths(&text) {
            if len > MAX {
                long.push(format!("{}:{line} {name}: {len} lines", path.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX} lines:\n{}",
        long.join("\n")
    );
    // The measure itself: a function of 151 lines is caught, one of 150 is not, braces in
    // strings, characters and comments do not count.
    let body = |n: usize| {
        let mut t = String::from("pub fn f() {\n    let s = \"}\"; let c = '{'; // }\n");
        t.push_str(&"    x();\n".repeat(n - 3));
        t.push_str("}\n");
        t
    };
    assert_eq!(function_lengths(&body(151)), [(1, "f".to_string(), 151)]);
    assert_eq!(function_lengths(&body(150)), [(1, "f".to_string(), 150)]);
}

/// The names a shader's header (its leading comment: launcher, CPU twin, parity tests) and the
/// doc comments of `src/` give in code spans or as paths: the map inside the code, held true as
/// the documents are.
fn names_in_code_comments(sources: &[(PathBuf, String)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, text) in sources {
        let p = path
            .strip_prefix(root())
            .unwrap_or(path)
            .to_string_lossy()
            .to_string();
        if p.starts_with("shaders/") && p.ends_with(".wgsl") {
            let header: Vec<&str> = text
                .lines()
                .take_while(|l| l.trim_start().starts_with("//"))
                .map(|l| l.trim_start().trim_start_matches('/'))
                .collect();
            for word in header.join(" ").split_whitespace() {
                let w = word.trim_matches(|c: char| ",;:()·.".contains(c) && c != '/');
                let w = w.trim_end_matches('.');
                if !w.contains('*') && (as_path(w).is_some() || w.contains("::")) {
                    out.push((p.clone(), w.to_string()));
                }
            }
        } else if p.starts_with("src/") && p.ends_with(".rs") {
            let docs: String = text
                .lines()
                .map(str::trim_start)
                .filter(|l| l.starts_with("///") || l.starts_with("//!"))
                .map(|l| format!("{}\n", &l[3..]))
                .collect();
            for span in code_spans(&docs) {
                out.push((p.clone(), span));
            }
        }
    }
    out
}

#[test]
fn every_name_in_shader_headers_and_doc_comments_exists() {
    let sources = sources();
    // Other crates' items, which their own docs keep.
    let external = [
        "rand::",
        "rand_core::",
        "safetensors::",
        "serde_json::",
        "image::",
        "log::",
    ];
    let names = names_in_code_comments(&sources)
        .into_iter()
        .filter(|(_, span)| !external.iter().any(|e| span.starts_with(e)))
        .map(|(file, span)| (file, span, root().to_path_buf()));
    let (missing, checked) = stale(&sources, names);
    assert!(
        missing.is_empty(),
        "{} of {checked} names in shader headers and doc comments are stale:\n{}",
        missing.len(),
        missing.join("\n")
    );
    eprintln!("{checked} paths and items named in shader headers and doc comments exist");
}
