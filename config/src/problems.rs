//! Configuration problems: each one a key path and a message, collected so that `check`
//! can show every problem in one run instead of one per edit-and-retry cycle.

use std::fmt;

/// One thing wrong with the config, located by its key path
/// (e.g. `targets[1].roles.read.password_env`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: a key path, or `line L, column C` for a TOML syntax error, or the file's path
    /// when the file itself cannot be read.
    pub path: String,
    /// What is wrong, lower-case, without a trailing period; never contains a secret.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Everything wrong with a config file; displayed as one `path: message` line per problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", lines(&self.problems))]
pub struct ConfigErrors {
    /// Every problem, in file order as far as it can be known; never empty.
    pub problems: Vec<Problem>,
}

fn lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigErrors {
    /// A config error with a single problem.
    pub fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigErrors {
            problems: vec![Problem {
                path: path.into(),
                message: message.into(),
            }],
        }
    }

    /// Every problem, in file order as far as it can be known.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

/// Collects problems and warnings while the config is being checked.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
}

impl Report {
    /// Records a problem, unless one is already recorded at the same path: a value dropped
    /// for a type error must not come back as "required".
    pub fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        if self.problems.iter().any(|p| p.path == path) {
            return;
        }
        self.problems.push(Problem {
            path,
            message: message.into(),
        });
    }

    pub fn warn(&mut self, path: &str, message: impl fmt::Display) {
        self.warnings.push(format!("{path}: {message}"));
    }
}
