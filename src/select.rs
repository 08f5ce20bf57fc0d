//! Which files `idb upload` sends: the FILE arguments and a `--files-from`
//! list, directories walked with `-r`, `--include`/`--exclude` globs, and a
//! `--shard K/N` of the result. The engine's preflight then checks the final
//! list (exists, regular, readable, size, name).
//!
//! A dataset is flat (each file keeps only its base name), so two selected paths
//! with one base name are refused here, each named, before anything is sent.
//! Every path this module prints goes through [`escaped`].

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use walkdir::WalkDir;

use idb_engine::Uploader;

use crate::cli::SelectArgs;
use crate::console::Console;
use crate::exit::Exit;
use crate::text::escaped;

/// The `--files-from` value that means standard input.
const STDIN_LIST: &str = "-";

/// The files chosen, in order, and what to tell the user about them.
#[derive(Debug, Default)]
pub struct Selection {
    /// The paths to check and upload: the inputs in the order given (FILE
    /// arguments, then the list), each directory's files sorted by name, each
    /// path once. Empty only when a shard holds none of the files selected.
    pub paths: Vec<PathBuf>,
    /// Lines for stderr, paths already escaped: symbolic links followed,
    /// special files skipped, an empty shard.
    pub notes: Vec<String>,
}

/// A selection refused: every problem found, and the selected paths no
/// problem names, for the engine's check to look at too (so every problem is
/// reported at once).
#[derive(Debug)]
pub struct Refused {
    /// What is wrong.
    pub problems: Vec<Problem>,
    /// The paths selected that no problem names.
    pub others: Vec<PathBuf>,
}

impl From<Vec<Problem>> for Refused {
    fn from(problems: Vec<Problem>) -> Self {
        Refused {
            problems,
            others: Vec::new(),
        }
    }
}

/// Why no selection could be made.
#[derive(Debug)]
pub enum Problem {
    /// A directory given without `-r`.
    DirectoryWithoutRecursive {
        /// The directory.
        path: PathBuf,
    },
    /// A walk met a symbolic link leading back to a directory it is in.
    LinkLoop {
        /// The link.
        path: PathBuf,
        /// The directory it leads back to.
        ancestor: PathBuf,
    },
    /// A walk met a symbolic link whose target does not exist.
    DanglingLink {
        /// The link.
        path: PathBuf,
        /// What it points to, if it could be read.
        target: Option<PathBuf>,
    },
    /// A walk could not read a directory or an entry.
    Unreadable {
        /// What could not be read (the walk's root if unknown).
        path: PathBuf,
        /// Why.
        error: String,
    },
    /// Paths that would all have the same name in the dataset.
    NameClash {
        /// The base name.
        name: OsString,
        /// Every selected path with that base name, in selection order.
        paths: Vec<PathBuf>,
    },
    /// A name with a control character (U+0001 to U+001F, U+007F), which the
    /// Data Bank refuses.
    ControlCharacter {
        /// The file.
        path: PathBuf,
    },
    /// A glob that does not parse.
    BadGlob {
        /// `--include` or `--exclude`.
        option: &'static str,
        /// The glob as given.
        glob: String,
        /// What is wrong with it.
        error: String,
    },
    /// The `--files-from` list could not be read.
    List {
        /// The list's path (`-` for standard input).
        list: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// Nothing is left to upload.
    Empty {
        /// Files found before `--include`/`--exclude`, special files not
        /// counted (0: the inputs hold none).
        found: usize,
    },
}

impl Problem {
    /// The selected files this problem is about (those the engine's check
    /// need not look at).
    fn files(&self) -> &[PathBuf] {
        match self {
            Problem::NameClash { paths, .. } => paths,
            Problem::ControlCharacter { path } => std::slice::from_ref(path),
            _ => &[],
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::DirectoryWithoutRecursive { path } => write!(
                f,
                "{} is a directory; add -r (--recursive) to upload the files in it",
                escaped(path)
            ),
            Problem::LinkLoop { path, ancestor } => write!(
                f,
                "{}: a symbolic link loop (it leads back to {}); remove the link, or leave \
                 it out with --exclude",
                escaped(path),
                escaped(ancestor)
            ),
            Problem::DanglingLink { path, target } => {
                write!(f, "{}: a symbolic link to ", escaped(path))?;
                match target {
                    Some(target) => write!(f, "{}, which", escaped(target))?,
                    None => f.write_str("something that")?,
                }
                f.write_str(
                    " does not exist; fix or remove the link, or leave it out with --exclude",
                )
            }
            Problem::Unreadable { path, error } => write!(
                f,
                "cannot read {}: {error}; check its permissions, or leave it out with --exclude",
                escaped(path)
            ),
            Problem::NameClash { name, paths } => {
                write!(
                    f,
                    "{} files would have the same name, {}, in the dataset (a dataset is flat: \
                     each file keeps only its base name):",
                    paths.len(),
                    escaped(Path::new(name))
                )?;
                for path in paths {
                    write!(f, "\n  {}", escaped(path))?;
                }
                f.write_str(
                    "\nrename all but one, leave the others out with --exclude, or upload them \
                     into separate datasets",
                )
            }
            Problem::ControlCharacter { path } => write!(
                f,
                "{}: the name has a control character (like a newline, tab or escape), which \
                 the Data Bank refuses; rename the file",
                escaped(path)
            ),
            Problem::BadGlob {
                option,
                glob,
                error,
            } => write!(
                f,
                "{option} {glob:?} is not a valid glob: {error}; fix it (and quote it, so the \
                 shell passes it as it is)"
            ),
            Problem::List { list, error } => {
                if list.as_os_str() == STDIN_LIST {
                    f.write_str("cannot read the --files-from list from standard input")?;
                } else {
                    write!(f, "cannot read the --files-from list {}", escaped(list))?;
                }
                write!(f, ": {error}")
            }
            Problem::Empty { found: 0 } => f.write_str(
                "no files to upload: the directories and lists given hold no regular files; \
                 give files, or directories with files in them",
            ),
            Problem::Empty { found } => write!(
                f,
                "no files to upload: --include/--exclude left out all {found} files found; \
                 check the globs"
            ),
        }
    }
}

/// `--shard K/N`: the K-th of N disjoint parts of the files, split by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// K, from 1 to `count`.
    index: u64,
    /// N, at least 1.
    count: u64,
}

impl Shard {
    /// Whether the file named `name` (its base name: its name in the dataset)
    /// belongs to this shard: the first 8 bytes of the name's blake3, mod N,
    /// are K - 1. The same name lands in the same shard on every machine and
    /// whatever the order of the files.
    pub fn holds(&self, name: &OsStr) -> bool {
        let hash = blake3::hash(name.as_bytes());
        let head: [u8; 8] = hash.as_bytes()[..8].try_into().expect("8 of 32 bytes");
        u64::from_le_bytes(head) % self.count == self.index - 1
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    /// Parses `K/N`. The error says what is wrong, not where (clap names the
    /// option and the value: `invalid value '0/4' for '--shard <K/N>': ...`).
    fn from_str(text: &str) -> Result<Self, String> {
        let shape = || "give K/N with whole numbers, like 3/8".to_owned();
        let (index, count) = text.split_once('/').ok_or_else(shape)?;
        let index: u64 = index.trim().parse().map_err(|_| shape())?;
        let count: u64 = count.trim().parse().map_err(|_| shape())?;
        if count == 0 {
            return Err("N must be at least 1".to_owned());
        }
        if !(1..=count).contains(&index) {
            return Err("K must be from 1 to N".to_owned());
        }
        Ok(Shard { index, count })
    }
}

/// `--shard`'s value parser.
pub fn parse_shard(text: &str) -> Result<Shard, String> {
    text.parse()
}

/// Selects the files, prints the notes and problems, and returns the paths for
/// the engine's check, or the exit code when there is nothing to send. When the
/// selection is refused, the paths it did select are checked by `uploader` too,
/// so every problem is reported in one run.
pub fn files_to_upload(
    files: &[PathBuf],
    args: &SelectArgs,
    uploader: &Uploader,
    console: &Console,
) -> Result<Vec<PathBuf>, Exit> {
    match select(files, args, &mut io::stdin().lock()) {
        Ok(selection) => {
            for note in &selection.notes {
                console.note(note);
            }
            if selection.paths.is_empty() {
                // An empty shard of a non-empty selection: nothing to do is success.
                Err(Exit::Success)
            } else {
                Ok(selection.paths)
            }
        }
        Err(refused) => {
            let mut shown: Vec<String> = refused.problems.iter().map(ToString::to_string).collect();
            if let Err(problems) = uploader.check(&refused.others) {
                shown.extend(problems.iter().map(|problem| {
                    crate::text::escaped_message(
                        &problem.to_string(),
                        refused.others.iter().map(|p| p.as_path()),
                    )
                }));
            }
            for line in &shown {
                console.error(&format!("error: {line}"));
            }
            console.error("nothing was uploaded; fix the problems above and run the command again");
            console.refused(&shown);
            Err(Exit::BadInput)
        }
    }
}

/// Selects the files: `files`, then the `--files-from` list (read from `stdin`
/// when it is `-`), directories walked with `-r`, filtered, then sharded.
pub fn select(
    files: &[PathBuf],
    args: &SelectArgs,
    stdin: &mut dyn Read,
) -> Result<Selection, Refused> {
    let filter = Filter::new(&args.include, &args.exclude)?;
    let mut problems = Vec::new();
    let mut inputs = files.to_vec();
    if let Some(list) = &args.files_from {
        match read_list(list, args.null, stdin) {
            Ok(paths) => inputs.extend(paths),
            Err(problem) => problems.push(problem),
        }
    }
    let mut found = Vec::new();
    for input in inputs {
        expand(input, args.recursive, &filter, &mut found, &mut problems);
    }
    let uploadable = |f: &Found| !matches!(f.kind, Kind::Special);
    let total = found.iter().filter(|f| uploadable(f)).count();
    // A file given twice, however spelt (`a/x.csv`, `./a/x.csv`,
    // `b/../a/x.csv`, its absolute path, through a linked directory), is one
    // file: the first spelling stays.
    let mut seen = HashSet::new();
    let chosen: Vec<Found> = found
        .into_iter()
        .filter(|f| filter.admits(&f.relative))
        .filter(|f| seen.insert(SameFile::of(&f.path)))
        .collect();
    if !chosen.iter().any(uploadable) && problems.is_empty() {
        return Err(vec![Problem::Empty { found: total }].into());
    }
    let before_shard = chosen.iter().filter(|f| uploadable(f)).count();
    let chosen: Vec<Found> = match args.shard {
        Some(shard) => {
            // A name two files of the selection share is kept in every shard,
            // so that every task of a job array refuses the selection alike
            // (the check after this names both files), not only the one whose
            // shard holds the name.
            let mut names: HashMap<&OsStr, usize> = HashMap::new();
            for f in chosen.iter().filter(|f| uploadable(f)) {
                *names.entry(dataset_name(&f.path)).or_insert(0) += 1;
            }
            let shared: HashSet<std::ffi::OsString> = names
                .into_iter()
                .filter(|&(_, n)| n > 1)
                .map(|(name, _)| name.to_owned())
                .collect();
            chosen
                .into_iter()
                .filter(|f| {
                    let name = dataset_name(&f.path);
                    shard.holds(name) || (uploadable(f) && shared.contains(name))
                })
                .collect()
        }
        None => chosen,
    };
    let mut selection = Selection::default();
    for file in chosen {
        match file.kind {
            Kind::Given | Kind::Regular => selection.paths.push(file.path),
            Kind::Link { target } => {
                selection.notes.push(format!(
                    "note: {} is a symbolic link; uploading {}'s bytes as {}",
                    escaped(&file.path),
                    escaped(&target),
                    escaped(Path::new(dataset_name(&file.path)))
                ));
                selection.paths.push(file.path);
            }
            Kind::Special => selection.notes.push(format!(
                "note: skipping {}: not a regular file",
                escaped(&file.path)
            )),
            Kind::Dangling { target } => problems.push(Problem::DanglingLink {
                path: file.path,
                target,
            }),
        }
    }
    problems.extend(name_problems(&selection.paths));
    if !problems.is_empty() {
        let named: HashSet<&PathBuf> = problems.iter().flat_map(Problem::files).collect();
        let others = selection
            .paths
            .iter()
            .filter(|path| !named.contains(path))
            .cloned()
            .collect();
        return Err(Refused { problems, others });
    }
    if let (true, Some(shard)) = (selection.paths.is_empty(), args.shard) {
        selection.notes.push(format!(
            "note: shard {shard} holds none of the {before_shard} files selected; \
             nothing to upload"
        ));
    }
    Ok(selection)
}

/// What two spellings of one file to upload share: the file itself (its
/// device and inode, links followed) and the name it gets in the dataset. So
/// hard links or symbolic links of other names stay separate files, as their
/// names differ. A path whose metadata cannot be read (its problem is
/// reported later) is known by its absolute spelling.
#[derive(Debug, PartialEq, Eq, Hash)]
enum SameFile {
    Node { dev: u64, ino: u64, name: OsString },
    Path(PathBuf),
}

impl SameFile {
    fn of(path: &Path) -> Self {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(path) {
            Ok(meta) => SameFile::Node {
                dev: meta.dev(),
                ino: meta.ino(),
                name: dataset_name(path).to_owned(),
            },
            Err(_) => SameFile::Path(std::path::absolute(path).unwrap_or_else(|_| path.to_owned())),
        }
    }
}

/// A file's name in the dataset: its base name (the whole path if it has none;
/// the engine's check refuses such a path).
fn dataset_name(path: &Path) -> &OsStr {
    path.file_name().unwrap_or(path.as_os_str())
}

/// Paths with one base name, and names with control characters.
fn name_problems(paths: &[PathBuf]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut by_name: HashMap<&OsStr, Vec<&PathBuf>> = HashMap::new();
    let mut names = Vec::new();
    for path in paths {
        let Some(name) = path.file_name() else {
            continue;
        };
        if name.as_bytes().iter().any(|&b| b < 0x20 || b == 0x7f) {
            problems.push(Problem::ControlCharacter { path: path.clone() });
        }
        let same = by_name.entry(name).or_default();
        if same.is_empty() {
            names.push(name);
        }
        same.push(path);
    }
    for name in names {
        let paths = &by_name[name];
        if paths.len() > 1 {
            problems.push(Problem::NameClash {
                name: name.to_owned(),
                paths: paths.iter().map(|p| (*p).clone()).collect(),
            });
        }
    }
    problems
}

/// Reads a `--files-from` list: one path a line (or a NUL-separated list), blank
/// entries ignored, each taken as it is but for a line's trailing `\r`.
fn read_list(list: &Path, null: bool, stdin: &mut dyn Read) -> Result<Vec<PathBuf>, Problem> {
    let mut bytes = Vec::new();
    let read = if list.as_os_str() == STDIN_LIST {
        stdin.read_to_end(&mut bytes).map(drop)
    } else {
        std::fs::File::open(list).and_then(|mut file| file.read_to_end(&mut bytes).map(drop))
    };
    read.map_err(|error| Problem::List {
        list: list.to_path_buf(),
        error,
    })?;
    Ok(parse_list(&bytes, null))
}

/// The paths of a list's bytes (see [`read_list`]).
fn parse_list(bytes: &[u8], null: bool) -> Vec<PathBuf> {
    let separator = if null { b'\0' } else { b'\n' };
    bytes
        .split(|&b| b == separator)
        .map(|entry| match entry {
            [line @ .., b'\r'] if !null => line,
            entry => entry,
        })
        .filter(|entry| !entry.is_empty())
        .map(|entry| PathBuf::from(OsString::from_vec(entry.to_vec())))
        .collect()
}

/// A path found, before filters and shards.
struct Found {
    path: PathBuf,
    /// What the globs are matched against: the path from the walked directory,
    /// or the base name of a path given directly.
    relative: PathBuf,
    kind: Kind,
}

enum Kind {
    /// Given directly and not a directory: the engine's check says what it is.
    Given,
    /// A regular file found in a walk.
    Regular,
    /// A symbolic link to a regular file (given or found), and its target.
    Link { target: PathBuf },
    /// A FIFO, socket or device found in a walk: skipped with a note.
    Special,
    /// A symbolic link to nothing, found in a walk.
    Dangling { target: Option<PathBuf> },
}

/// Adds what `input` stands for to `found`: itself, or with `recursive` the
/// files under it if it is a directory.
fn expand(
    input: PathBuf,
    recursive: bool,
    filter: &Filter,
    found: &mut Vec<Found>,
    problems: &mut Vec<Problem>,
) {
    // Follows links: a link to a directory is a directory.
    let is_dir = std::fs::metadata(&input).is_ok_and(|m| m.is_dir());
    if is_dir {
        if recursive {
            walk(&input, filter, found, problems);
        } else {
            problems.push(Problem::DirectoryWithoutRecursive { path: input });
        }
        return;
    }
    let relative = PathBuf::from(dataset_name(&input));
    let kind = match link_to_file(&input) {
        Some(target) => Kind::Link { target },
        // Missing, unreadable, special: the engine's check reports it.
        None => Kind::Given,
    };
    found.push(Found {
        path: input,
        relative,
        kind,
    });
}

/// The final target of `path` if it is a symbolic link to a regular file.
fn link_to_file(path: &Path) -> Option<PathBuf> {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let to_file = std::fs::metadata(path).is_ok_and(|m| m.is_file());
    (is_link && to_file).then(|| link_target(path))
}

/// Where a link finally leads (its own text if that cannot be resolved).
fn link_target(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::fs::read_link(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// Walks `root` (links followed, entries sorted by name, excluded directories
/// not entered) and adds every non-directory under it to `found`.
fn walk(root: &Path, filter: &Filter, found: &mut Vec<Found>, problems: &mut Vec<Problem>) {
    let relative = |path: &Path| path.strip_prefix(root).unwrap_or(path).to_path_buf();
    let walker = WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| {
            !(entry.depth() > 0
                && entry.file_type().is_dir()
                && filter.excludes(&relative(entry.path())))
        });
    for entry in walker {
        match entry {
            Ok(entry) if entry.file_type().is_dir() => {}
            Ok(entry) => {
                let kind = if !entry.file_type().is_file() {
                    Kind::Special
                } else if entry.path_is_symlink() {
                    Kind::Link {
                        target: link_target(entry.path()),
                    }
                } else {
                    Kind::Regular
                };
                found.push(Found {
                    relative: relative(entry.path()),
                    path: entry.into_path(),
                    kind,
                });
            }
            Err(error) => {
                let path = error.path().unwrap_or(root).to_path_buf();
                // An entry the walk could not take (a link loop, a link to
                // nothing, an unreadable entry) never reached `filter_entry`:
                // an exclude leaves it out here, as it would any other entry.
                if filter.excludes(&relative(&path)) {
                    continue;
                }
                if let Some(ancestor) = error.loop_ancestor() {
                    problems.push(Problem::LinkLoop {
                        ancestor: ancestor.to_path_buf(),
                        path,
                    });
                } else if is_dangling(&path) {
                    found.push(Found {
                        relative: relative(&path),
                        kind: Kind::Dangling {
                            target: std::fs::read_link(&path).ok(),
                        },
                        path,
                    });
                } else {
                    let error = match error.io_error() {
                        Some(io) => io.to_string(),
                        None => error.to_string(),
                    };
                    problems.push(Problem::Unreadable { path, error });
                }
            }
        }
    }
}

/// Whether `path` is a symbolic link whose target does not exist.
fn is_dangling(path: &Path) -> bool {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    is_link
        && std::fs::metadata(path).is_err_and(|e| {
            matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            )
        })
}

/// `--include` and `--exclude`. A glob without `/` is matched against a file's
/// base name at any depth (it is compiled as `**/GLOB`); a glob with `/`
/// against the path from the walked directory, where `*` stays within one
/// directory and `**` crosses any number.
struct Filter {
    /// `None`: no `--include`, every file is in.
    include: Option<GlobSet>,
    exclude: GlobSet,
}

impl Filter {
    fn new(include: &[String], exclude: &[String]) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let include_set = compile("--include", include, &mut problems);
        let exclude = compile("--exclude", exclude, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Filter {
            include: (!include.is_empty()).then_some(include_set),
            exclude,
        })
    }

    /// Whether a file at `relative` is selected: it matches an include (if any
    /// is given) and no exclude.
    fn admits(&self, relative: &Path) -> bool {
        self.include
            .as_ref()
            .is_none_or(|set| set.is_match(relative))
            && !self.excludes(relative)
    }

    /// Whether an entry at `relative` (a file, or a directory with all it
    /// holds) matches an exclude.
    fn excludes(&self, relative: &Path) -> bool {
        self.exclude.is_match(relative)
    }
}

/// Compiles one option's globs into a set, adding a problem for each bad one.
fn compile(option: &'static str, globs: &[String], problems: &mut Vec<Problem>) -> GlobSet {
    let mut set = GlobSetBuilder::new();
    for glob in globs {
        let pattern = if glob.contains('/') {
            glob.clone()
        } else {
            format!("**/{glob}")
        };
        match GlobBuilder::new(&pattern).literal_separator(true).build() {
            Ok(compiled) => {
                set.add(compiled);
            }
            Err(error) => problems.push(Problem::BadGlob {
                option,
                glob: glob.clone(),
                error: error.kind().to_string(),
            }),
        }
    }
    set.build().unwrap_or_else(|_| GlobSet::empty())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A temporary tree of files (each holding its own path as bytes).
    struct Tree {
        root: tempfile::TempDir,
    }

    impl Tree {
        fn new(files: &[&str]) -> Self {
            let root = tempfile::tempdir().expect("create a temp dir");
            let tree = Tree { root };
            for file in files {
                tree.file(file);
            }
            tree
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.root.path().join(rel)
        }

        fn file(&self, rel: &str) -> PathBuf {
            let path = self.path(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, rel).unwrap();
            path
        }

        /// Paths under the root, as relative strings, for comparing.
        fn rel(&self, paths: &[PathBuf]) -> Vec<String> {
            paths
                .iter()
                .map(|p| {
                    p.strip_prefix(self.root.path())
                        .unwrap()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
        }
    }

    fn recursive() -> SelectArgs {
        SelectArgs {
            recursive: true,
            ..SelectArgs::default()
        }
    }

    fn run(files: &[PathBuf], args: &SelectArgs) -> Result<Selection, Refused> {
        select(files, args, &mut io::empty())
    }

    #[track_caller]
    fn selected(files: &[PathBuf], args: &SelectArgs) -> Selection {
        run(files, args).unwrap_or_else(|refused| {
            let shown: Vec<String> = refused.problems.iter().map(ToString::to_string).collect();
            panic!("expected a selection, got problems: {shown:#?}")
        })
    }

    #[track_caller]
    fn refused(files: &[PathBuf], args: &SelectArgs) -> Vec<Problem> {
        match run(files, args) {
            Ok(selection) => panic!("expected problems, got {:?}", selection.paths),
            Err(refused) => refused.problems,
        }
    }

    #[test]
    fn a_walk_is_sorted_by_name_at_every_level() {
        let tree = Tree::new(&["b/2.csv", "a.csv", "b/1.csv", "c/x/deep.csv", "0.csv"]);
        let selection = selected(&[tree.path("")], &recursive());
        assert_eq!(
            tree.rel(&selection.paths),
            ["0.csv", "a.csv", "b/1.csv", "b/2.csv", "c/x/deep.csv"]
        );
        assert!(selection.notes.is_empty(), "{:?}", selection.notes);
    }

    #[test]
    fn inputs_keep_the_order_given() {
        let tree = Tree::new(&["z.csv", "d/m.csv", "a.csv"]);
        let files = [tree.path("z.csv"), tree.path("d"), tree.path("a.csv")];
        let selection = selected(&files, &recursive());
        assert_eq!(tree.rel(&selection.paths), ["z.csv", "d/m.csv", "a.csv"]);
    }

    #[test]
    fn a_path_given_twice_is_uploaded_once() {
        let tree = Tree::new(&["d/a.csv"]);
        let files = [tree.path("d"), tree.path("d/a.csv")];
        let selection = selected(&files, &recursive());
        assert_eq!(tree.rel(&selection.paths), ["d/a.csv"]);
    }

    #[test]
    fn a_directory_without_recursive_is_refused_by_name() {
        let tree = Tree::new(&["d/a.csv"]);
        let problems = refused(&[tree.path("d")], &SelectArgs::default());
        assert!(
            matches!(&problems[..], [Problem::DirectoryWithoutRecursive { path }] if *path == tree.path("d"))
        );
        assert!(problems[0].to_string().contains("add -r"));
    }

    #[test]
    fn files_with_one_base_name_are_refused_listing_every_path() {
        let tree = Tree::new(&["day1/r.csv", "day2/r.csv", "day3/r.csv", "other.csv"]);
        let problems = refused(&[tree.path("")], &recursive());
        let [Problem::NameClash { name, paths }] = &problems[..] else {
            panic!("expected one clash: {problems:?}");
        };
        assert_eq!(name, "r.csv");
        assert_eq!(tree.rel(paths), ["day1/r.csv", "day2/r.csv", "day3/r.csv"]);
        let text = problems[0].to_string();
        for path in paths {
            assert!(text.contains(&path.display().to_string()), "{text}");
        }
        assert!(text.contains("--exclude") && text.contains("separate datasets"));
    }

    #[test]
    fn a_refusal_hands_the_unnamed_paths_on_for_checking() {
        let tree = Tree::new(&["d1/r.csv", "d2/r.csv", "good.csv", "dir/x.csv"]);
        let files = [
            tree.path("d1/r.csv"),
            tree.path("good.csv"),
            tree.path("d2/r.csv"),
            tree.path("missing.csv"),
            tree.path("dir"),
        ];
        let Err(refused) = run(&files, &SelectArgs::default()) else {
            panic!("a clash and a directory without -r must be refused");
        };
        assert!(matches!(
            &refused.problems[..],
            [
                Problem::DirectoryWithoutRecursive { .. },
                Problem::NameClash { .. }
            ]
        ));
        assert_eq!(tree.rel(&refused.others), ["good.csv", "missing.csv"]);
    }

    #[test]
    fn a_glob_without_a_slash_matches_the_base_name_at_any_depth() {
        let tree = Tree::new(&[
            "a.csv",
            "sub/b.csv",
            "sub/deeper/c.csv",
            "d.txt",
            "sub/e.h5",
        ]);
        let args = SelectArgs {
            include: vec!["*.csv".into()],
            ..recursive()
        };
        let selection = selected(&[tree.path("")], &args);
        assert_eq!(
            tree.rel(&selection.paths),
            ["a.csv", "sub/b.csv", "sub/deeper/c.csv"]
        );
    }

    #[test]
    fn a_glob_with_a_slash_matches_the_path_from_the_walked_directory() {
        let tree = Tree::new(&["raw/a.h5", "raw/x/b.h5", "cooked/raw/c.h5", "d.h5"]);
        let one_level = SelectArgs {
            include: vec!["raw/*.h5".into()],
            ..recursive()
        };
        let selection = selected(&[tree.path("")], &one_level);
        assert_eq!(tree.rel(&selection.paths), ["raw/a.h5"]);

        let any_depth = SelectArgs {
            include: vec!["raw/**".into()],
            ..recursive()
        };
        let selection = selected(&[tree.path("")], &any_depth);
        assert_eq!(tree.rel(&selection.paths), ["raw/a.h5", "raw/x/b.h5"]);
    }

    /// The README's table of what globs match.
    #[test]
    fn the_readme_glob_examples_hold() {
        let rows: [(&str, &[&str], &[&str]); 4] = [
            ("*.csv", &["a.csv", "sub/deep/b.csv"], &["a.csv.gz"]),
            (
                "raw/*.h5",
                &["raw/x.h5"],
                &["raw/old/x.h5", "cooked/raw/x.h5"],
            ),
            ("raw/**", &["raw/x.h5", "raw/old/x.h5"], &["x/raw/y.h5"]),
            (
                "**/raw/*.h5",
                &["raw/x.h5", "a/b/raw/x.h5"],
                &["raw/old/x.h5"],
            ),
        ];
        for (glob, yes, no) in rows {
            let filter = Filter::new(&[glob.to_owned()], &[]).unwrap();
            for path in yes {
                assert!(filter.admits(Path::new(path)), "{glob} must match {path}");
            }
            for path in no {
                assert!(
                    !filter.admits(Path::new(path)),
                    "{glob} must not match {path}"
                );
            }
        }
        let scratch = Filter::new(&[], &["scratch".to_owned()]).unwrap();
        assert!(scratch.excludes(Path::new("scratch")));
        assert!(scratch.excludes(Path::new("a/scratch")));
        assert!(!scratch.excludes(Path::new("scratchpad")));
    }

    #[test]
    fn excludes_win_over_includes() {
        let tree = Tree::new(&["a.csv", "b.csv", "tmp-c.csv", "d.txt"]);
        let args = SelectArgs {
            include: vec!["*.csv".into(), "d.txt".into()],
            exclude: vec!["tmp-*".into(), "b.csv".into()],
            ..recursive()
        };
        let selection = selected(&[tree.path("")], &args);
        assert_eq!(tree.rel(&selection.paths), ["a.csv", "d.txt"]);
    }

    #[test]
    fn an_excluded_directory_is_not_entered() {
        let tree = Tree::new(&["keep.csv", ".git/config", "sub/.git/HEAD"]);
        // A link loop inside would be a problem if the walk went in.
        symlink(tree.path(".git"), tree.path(".git/loop")).unwrap();
        let args = SelectArgs {
            exclude: vec![".git".into()],
            ..recursive()
        };
        let selection = selected(&[tree.path("")], &args);
        assert_eq!(tree.rel(&selection.paths), ["keep.csv"]);
    }

    #[test]
    fn globs_match_the_base_name_of_files_given_directly() {
        let tree = Tree::new(&["raw/a.csv", "raw/b.txt"]);
        let files = [tree.path("raw/a.csv"), tree.path("raw/b.txt")];
        let args = SelectArgs {
            include: vec!["*.csv".into()],
            ..SelectArgs::default()
        };
        assert_eq!(tree.rel(&selected(&files, &args).paths), ["raw/a.csv"]);
        // The directory is not part of what a given file's globs see.
        let args = SelectArgs {
            include: vec!["raw/*.csv".into()],
            ..SelectArgs::default()
        };
        assert!(matches!(
            &refused(&files, &args)[..],
            [Problem::Empty { found: 2 }]
        ));
    }

    #[test]
    fn everything_excluded_is_refused_as_empty() {
        let tree = Tree::new(&["a.csv", "b.csv"]);
        let args = SelectArgs {
            exclude: vec!["*".into()],
            ..recursive()
        };
        let problems = refused(&[tree.path("")], &args);
        assert!(matches!(&problems[..], [Problem::Empty { found: 2 }]));
        assert!(problems[0].to_string().contains("left out all 2 files"));
    }

    #[test]
    fn an_empty_directory_is_refused_as_empty() {
        let tree = Tree::new(&[]);
        std::fs::create_dir(tree.path("empty")).unwrap();
        let problems = refused(&[tree.path("empty")], &recursive());
        assert!(matches!(&problems[..], [Problem::Empty { found: 0 }]));
    }

    #[test]
    fn a_bad_glob_names_the_option_and_the_glob() {
        let args = SelectArgs {
            include: vec!["ok*".into(), "[unclosed".into()],
            exclude: vec!["{a,b".into()],
            ..SelectArgs::default()
        };
        let problems = refused(&[PathBuf::from("x")], &args);
        let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(
            texts[0].starts_with("--include \"[unclosed\""),
            "{}",
            texts[0]
        );
        assert!(texts[1].starts_with("--exclude \"{a,b\""), "{}", texts[1]);
    }

    #[test]
    fn a_list_takes_lines_literally_but_drops_blank_lines_and_a_trailing_cr() {
        let list = b"a b.csv\n\n  spaced  \r\nlast\r\n\r\n";
        assert_eq!(
            parse_list(list, false),
            [
                PathBuf::from("a b.csv"),
                PathBuf::from("  spaced  "),
                PathBuf::from("last"),
            ]
        );
    }

    #[test]
    fn a_nul_separated_list_keeps_newlines_and_carriage_returns_in_names() {
        let list = b"a\nb\0c\r\0\0d";
        assert_eq!(
            parse_list(list, true),
            [
                PathBuf::from("a\nb"),
                PathBuf::from("c\r"),
                PathBuf::from("d")
            ]
        );
    }

    #[test]
    fn a_list_from_stdin_adds_to_the_files_given() {
        let tree = Tree::new(&["a.csv", "b.csv", "d/c.csv"]);
        let list = format!(
            "{}\n{}\n",
            tree.path("b.csv").display(),
            tree.path("d").display()
        );
        let args = SelectArgs {
            files_from: Some(PathBuf::from("-")),
            ..recursive()
        };
        let selection = select(&[tree.path("a.csv")], &args, &mut list.as_bytes()).unwrap();
        assert_eq!(tree.rel(&selection.paths), ["a.csv", "b.csv", "d/c.csv"]);
    }

    #[test]
    fn a_list_that_cannot_be_read_is_named() {
        let tree = Tree::new(&["a.csv"]);
        let args = SelectArgs {
            files_from: Some(tree.path("no-such-list")),
            ..SelectArgs::default()
        };
        let problems = refused(&[tree.path("a.csv")], &args);
        assert!(
            matches!(&problems[..], [Problem::List { list, .. }] if *list == tree.path("no-such-list"))
        );
    }

    #[test]
    fn shards_are_disjoint_and_cover_the_whole_set_in_any_order() {
        let names: Vec<String> = (0..200).map(|i| format!("f{i:03}.bin")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let tree = Tree::new(&refs);
        let forward: Vec<PathBuf> = names.iter().map(|n| tree.path(n)).collect();
        let backward: Vec<PathBuf> = forward.iter().rev().cloned().collect();
        let mut union = Vec::new();
        for k in 1..=8 {
            let args = SelectArgs {
                shard: Some(format!("{k}/8").parse().unwrap()),
                ..SelectArgs::default()
            };
            let mut part = tree.rel(&selected(&forward, &args).paths);
            let mut same = tree.rel(&selected(&backward, &args).paths);
            part.sort();
            same.sort();
            assert_eq!(part, same, "shard {k}/8 depends on the order given");
            assert!(!part.is_empty(), "200 names leave shard {k}/8 empty");
            union.extend(part);
        }
        union.sort();
        let mut expected = names.clone();
        expected.sort();
        // Sorted and equal: each name exactly once over the 8 shards.
        assert_eq!(union, expected);
    }

    #[test]
    fn a_shard_is_decided_by_the_base_name_alone() {
        let names: Vec<String> = (0..50).map(|i| format!("run-{i}.h5")).collect();
        let mut files = Vec::new();
        for name in &names {
            files.push(format!("first/{name}"));
            files.push(format!("second/deeper/{name}"));
        }
        let refs: Vec<&str> = files.iter().map(String::as_str).collect();
        let tree = Tree::new(&refs);
        for k in 1..=3 {
            let args = SelectArgs {
                shard: Some(format!("{k}/3").parse().unwrap()),
                ..recursive()
            };
            let names_in = |dir: &str| -> Vec<PathBuf> {
                selected(&[tree.path(dir)], &args)
                    .paths
                    .iter()
                    .map(|p| PathBuf::from(p.file_name().unwrap()))
                    .collect()
            };
            assert_eq!(names_in("first"), names_in("second"), "shard {k}/3");
        }
    }

    #[test]
    fn an_empty_shard_is_a_note_not_a_problem() {
        let tree = Tree::new(&["only.bin"]);
        let held_by = (1..=2)
            .find(|k| {
                format!("{k}/2")
                    .parse::<Shard>()
                    .unwrap()
                    .holds(OsStr::new("only.bin"))
            })
            .unwrap();
        let other = 3 - held_by;
        let args = SelectArgs {
            shard: Some(format!("{other}/2").parse().unwrap()),
            ..SelectArgs::default()
        };
        let selection = selected(&[tree.path("only.bin")], &args);
        assert!(selection.paths.is_empty());
        assert_eq!(
            selection.notes,
            [format!(
                "note: shard {other}/2 holds none of the 1 files selected; nothing to upload"
            )]
        );
    }

    #[test]
    fn bad_shards_say_what_is_wrong() {
        let error = |text: &str| text.parse::<Shard>().unwrap_err();
        assert_eq!(error("0/4"), "K must be from 1 to N");
        assert_eq!(error("5/4"), "K must be from 1 to N");
        assert_eq!(error("1/0"), "N must be at least 1");
        for bad in ["3", "a/4", "1/4/2", "-1/4", ""] {
            assert_eq!(
                error(bad),
                "give K/N with whole numbers, like 3/8",
                "{bad:?}"
            );
        }
        assert_eq!("4/4".parse::<Shard>().unwrap().to_string(), "4/4");
    }

    #[test]
    fn a_link_to_a_file_is_uploaded_under_its_own_name_with_a_note() {
        let tree = Tree::new(&["data/real.csv"]);
        symlink(tree.path("data/real.csv"), tree.path("data/alias.csv")).unwrap();
        let selection = selected(&[tree.path("data")], &recursive());
        assert_eq!(
            tree.rel(&selection.paths),
            ["data/alias.csv", "data/real.csv"]
        );
        let target = std::fs::canonicalize(tree.path("data/real.csv")).unwrap();
        assert_eq!(
            selection.notes,
            [format!(
                "note: {} is a symbolic link; uploading {}'s bytes as alias.csv",
                tree.path("data/alias.csv").display(),
                target.display()
            )]
        );
    }

    #[test]
    fn a_link_given_directly_gets_a_note_too() {
        let tree = Tree::new(&["real.csv"]);
        symlink(tree.path("real.csv"), tree.path("alias.csv")).unwrap();
        let selection = selected(&[tree.path("alias.csv")], &SelectArgs::default());
        assert_eq!(tree.rel(&selection.paths), ["alias.csv"]);
        assert_eq!(selection.notes.len(), 1);
        assert!(selection.notes[0].ends_with("'s bytes as alias.csv"));
    }

    #[test]
    fn a_link_to_a_directory_is_walked() {
        let tree = Tree::new(&["elsewhere/x.csv", "top/y.csv"]);
        symlink(tree.path("elsewhere"), tree.path("top/linked")).unwrap();
        let selection = selected(&[tree.path("top")], &recursive());
        assert_eq!(
            tree.rel(&selection.paths),
            ["top/linked/x.csv", "top/y.csv"]
        );
    }

    #[test]
    fn a_link_loop_in_a_walk_is_a_problem_naming_the_link() {
        let tree = Tree::new(&["top/a.csv"]);
        symlink(tree.path("top"), tree.path("top/again")).unwrap();
        let problems = refused(&[tree.path("top")], &recursive());
        assert!(
            matches!(&problems[..], [Problem::LinkLoop { path, .. }] if *path == tree.path("top/again")),
            "{problems:?}"
        );
    }

    /// The loop's message says to leave it out with --exclude: every glob that
    /// names it, as for any other entry, does.
    #[test]
    fn a_link_loop_in_a_walk_is_left_out_by_any_exclude_that_names_it() {
        let tree = Tree::new(&["top/real.txt", "top/sub/keep.txt"]);
        symlink("../", tree.path("top/sub/loop")).unwrap();
        for glob in ["loop", "sub/loop", "**/loop", "lo*", "sub"] {
            let args = SelectArgs {
                exclude: vec![glob.into()],
                ..recursive()
            };
            let selection = run(&[tree.path("top")], &args).unwrap_or_else(|refused| {
                panic!(
                    "--exclude {glob:?} must leave the loop out: {:?}",
                    refused.problems
                )
            });
            let expected: &[&str] = if glob == "sub" {
                &["top/real.txt"]
            } else {
                &["top/real.txt", "top/sub/keep.txt"]
            };
            assert_eq!(tree.rel(&selection.paths), expected, "--exclude {glob:?}");
        }
        // A glob that names something else leaves the loop a problem.
        let args = SelectArgs {
            exclude: vec!["other".into()],
            ..recursive()
        };
        assert!(matches!(
            &refused(&[tree.path("top")], &args)[..],
            [Problem::LinkLoop { .. }]
        ));
    }

    #[test]
    fn a_dangling_link_in_a_walk_is_a_problem_naming_the_link() {
        let tree = Tree::new(&["top/a.csv"]);
        symlink(tree.path("gone.csv"), tree.path("top/broken.csv")).unwrap();
        let problems = refused(&[tree.path("top")], &recursive());
        assert!(
            matches!(&problems[..], [Problem::DanglingLink { path, .. }] if *path == tree.path("top/broken.csv")),
            "{problems:?}"
        );
        assert!(problems[0].to_string().contains("does not exist"));
        // Left out by a glob, it is no problem.
        let args = SelectArgs {
            exclude: vec!["broken.csv".into()],
            ..recursive()
        };
        assert_eq!(
            tree.rel(&selected(&[tree.path("top")], &args).paths),
            ["top/a.csv"]
        );
    }

    #[test]
    fn a_special_file_in_a_walk_is_skipped_with_a_note() {
        let tree = Tree::new(&["top/a.csv"]);
        let socket = tree.path("top/control.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let selection = selected(&[tree.path("top")], &recursive());
        assert_eq!(tree.rel(&selection.paths), ["top/a.csv"]);
        assert_eq!(
            selection.notes,
            [format!(
                "note: skipping {}: not a regular file",
                socket.display()
            )]
        );
    }

    #[test]
    fn a_special_file_given_directly_is_left_to_the_check() {
        let tree = Tree::new(&[]);
        let socket = tree.path("control.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let selection = selected(std::slice::from_ref(&socket), &SelectArgs::default());
        assert_eq!(selection.paths, [socket]);
    }

    #[test]
    fn a_name_with_a_control_character_is_refused_and_shown_escaped() {
        let tree = Tree::new(&["top/ok.csv", "top/two\nlines.csv", "top/\x1b[2Jclear.csv"]);
        let problems = refused(&[tree.path("top")], &recursive());
        let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(
            texts
                .iter()
                .all(|t| !t.contains('\n') && !t.contains('\x1b'))
        );
        assert!(
            texts.iter().any(|t| t.contains("top/two\\nlines.csv")),
            "{texts:?}"
        );
        assert!(
            texts.iter().any(|t| t.contains("top/\\x1b[2Jclear.csv")),
            "{texts:?}"
        );
    }
}
