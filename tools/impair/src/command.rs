//! Running `ip` and `tc`, and telling their failures apart.

use std::fmt;
use std::process::{Command, Output};

/// `ip` with these arguments, split at spaces. Every argument here is a word, a name or an
/// address that this module made, none with a space in it.
pub(crate) fn ip(args: &str) -> Command {
    let mut command = Command::new("ip");
    command.args(args.split_whitespace());
    command
}

/// `tc` with these arguments, split at spaces like [`ip`]'s, then `extra` as they are.
pub(crate) fn tc(args: &str, extra: &[String]) -> Command {
    let mut command = Command::new("tc");
    command.args(args.split_whitespace()).args(extra);
    command
}

/// Why a command did not do its job.
#[derive(Debug)]
pub(crate) enum CommandError {
    /// The program is not installed.
    NotFound { program: String },
    /// It could not be started for another reason.
    Spawn { line: String, error: std::io::Error },
    /// It ran and failed.
    Failed { line: String, stderr: String },
}

impl CommandError {
    /// The part worth showing a person: the tool's own words.
    pub(crate) fn brief(&self) -> String {
        match self {
            CommandError::Failed { stderr, .. } if !stderr.is_empty() => stderr.clone(),
            other => other.to_string(),
        }
    }

    pub(crate) fn says_qdisc_unknown(&self) -> bool {
        matches!(self, CommandError::Failed { stderr, .. }
            if stderr.contains("qdisc kind is unknown"))
    }

    /// Teardown of something that is not there (any more) is not a failure.
    pub(crate) fn says_already_gone(&self) -> bool {
        matches!(self, CommandError::Failed { stderr, .. }
            if stderr.contains("Cannot find device") || stderr.contains("does not exist")
                || stderr.contains("No such file"))
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::NotFound { program } => write!(f, "`{program}` was not found in PATH"),
            CommandError::Spawn { line, error } => write!(f, "cannot run `{line}`: {error}"),
            CommandError::Failed { line, stderr } => write!(f, "`{line}` failed: {stderr}"),
        }
    }
}

impl std::error::Error for CommandError {}

pub(crate) async fn run(command: Command) -> Result<String, CommandError> {
    let line = command_line(&command);
    let program = command.get_program().to_string_lossy().into_owned();
    let output = tokio::process::Command::from(command).output().await;
    finish(program, line, output)
}

/// For `Drop` and [`ImpairedLink::stats`], which cannot await.
pub(crate) fn run_blocking(mut command: Command) -> Result<String, CommandError> {
    let line = command_line(&command);
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command.output();
    finish(program, line, output)
}

fn finish(
    program: String,
    line: String,
    output: std::io::Result<Output>,
) -> Result<String, CommandError> {
    match output {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(CommandError::NotFound { program })
        }
        Err(error) => Err(CommandError::Spawn { line, error }),
        Ok(output) if output.status.success() => {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        }
        Ok(output) => Err(CommandError::Failed {
            line,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        }),
    }
}

fn command_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}
