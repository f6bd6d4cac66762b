//! Which of a role's `allow` entries a channel request needs, and the sentence a user sees
//! when the role does not have it.

use std::ops::Deref;

use portcullis_config::Allow;

/// What a session channel was asked to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Shell,
    Exec(ExecCommand),
    Subsystem(String),
}

/// An exec request's command: its text, which the policy checks and the log keeps, and the
/// client's bytes, which the target runs.
///
/// A command need not be UTF-8 (`scp` or `rsync` of a file named in Latin-1): its text then
/// has U+FFFD for each byte that is not, while the target still gets the bytes exactly, as
/// from sshd direct. Only bytes outside ASCII are ever replaced, so the shell syntax the
/// policy reads in the text (`is_scp`) is the syntax the target's shell reads in the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommand {
    text: String,
    /// The client's bytes, when they were not UTF-8.
    raw: Option<Vec<u8>>,
}

impl ExecCommand {
    /// The command of an exec request, as the client sent it.
    pub fn from_wire(bytes: &[u8]) -> ExecCommand {
        match std::str::from_utf8(bytes) {
            Ok(text) => ExecCommand {
                text: text.to_owned(),
                raw: None,
            },
            Err(_) => ExecCommand {
                text: String::from_utf8_lossy(bytes).into_owned(),
                raw: Some(bytes.to_vec()),
            },
        }
    }

    /// The bytes to send the target: exactly the client's.
    pub fn bytes(&self) -> &[u8] {
        self.raw.as_deref().unwrap_or(self.text.as_bytes())
    }

    /// The client's bytes, when they were not UTF-8 (the text alone would lose them).
    pub fn raw(&self) -> Option<&[u8]> {
        self.raw.as_deref()
    }
}

impl Deref for ExecCommand {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
    }
}

impl From<&str> for ExecCommand {
    fn from(text: &str) -> ExecCommand {
        ExecCommand::from_wire(text.as_bytes())
    }
}

impl Start {
    /// The allow entries any one of which permits this start.
    ///
    /// `scp` runs as `exec scp -t|-f ...` (legacy protocol) or, since OpenSSH 9, as the `sftp`
    /// subsystem; the two are indistinguishable on the wire, so a role allowing `scp` may
    /// also open the sftp subsystem. `rsync` is an exec like any other command.
    pub fn needs(&self) -> &'static [Allow] {
        match self {
            Start::Shell => &[Allow::Shell],
            Start::Exec(cmd) if is_scp(cmd) => &[Allow::Scp, Allow::Exec],
            Start::Exec(_) => &[Allow::Exec],
            Start::Subsystem(name) if name == "sftp" => &[Allow::Sftp, Allow::Scp],
            Start::Subsystem(_) => &[],
        }
    }

    /// The word for messages and audit events.
    pub fn kind(&self) -> &'static str {
        match self {
            Start::Shell => "shell",
            Start::Exec(cmd) if is_scp(cmd) => "scp",
            Start::Exec(_) => "exec",
            Start::Subsystem(name) if name == "sftp" => "sftp",
            Start::Subsystem(_) => "subsystem",
        }
    }
}

/// Where an scp server may be named by path: system directories only root can write, so
/// a user cannot put a program of their own there and call it scp.
const SCP_PATHS: &[&str] = &["scp", "/usr/bin/scp", "/bin/scp", "/usr/local/bin/scp"];

/// Characters that make the upstream's shell run something more than scp: command
/// separators, pipes, redirections, command substitution (`$(`, backticks) and line breaks.
/// Quotes, spaces, globs and `~` in the paths are fine: legacy scp hands the remote path to
/// the shell on purpose, so `host:'*.log'` expands there.
const SHELL_COMMAND_CHARS: &[char] = &[';', '&', '|', '<', '>', '`', '$', '(', ')', '\n', '\r'];

/// Is this exec the server side of legacy scp, and nothing else?
///
/// The target's sshd runs an exec through the login shell, so the whole command line
/// matters, not its first word: `scp -t /tmp && id` would run `id` under a role that allows
/// only scp. It is scp when it names the scp program (see [`SCP_PATHS`]), passes only the
/// flags OpenSSH's client sends to its server side (`-v -r -p -d`, then exactly one of
/// `-t` (to the target) or `-f` (from it)), and holds none of [`SHELL_COMMAND_CHARS`].
pub fn is_scp(command: &str) -> bool {
    if command.contains(SHELL_COMMAND_CHARS) {
        return false;
    }
    let mut words = command.split_whitespace();
    if !words.next().is_some_and(|w| SCP_PATHS.contains(&w)) {
        return false;
    }
    let mut direction = 0;
    for w in words {
        if w == "--" || !w.starts_with('-') {
            break;
        }
        match w {
            "-t" | "-f" => direction += 1,
            "-v" | "-r" | "-p" | "-d" => {}
            _ => return false,
        }
    }
    direction == 1
}

/// Would this be scp but for the shell characters in it (a file named `a$(b)`, say)? Its
/// user ran scp, and is told why it was taken for more than scp (see [`scp_refusal`]).
fn scp_but_for_shell_chars(command: &str) -> bool {
    command.contains(SHELL_COMMAND_CHARS) && is_scp(&command.replace(SHELL_COMMAND_CHARS, "_"))
}

/// The refusal `sentence` for starting `what` under a role allowing `allowed`, with the
/// reason a legacy scp was taken for an exec when that is what happened: legacy scp (`scp
/// -O`) sends its paths through the target's shell, so a shell character in a file name
/// is indistinguishable from a command. Without `-O`, scp speaks sftp, which takes any name.
pub fn scp_refusal(what: &Start, allowed: &[Allow], sentence: String) -> String {
    match what {
        Start::Exec(cmd) if allowed.contains(&Allow::Scp) && scp_but_for_shell_chars(cmd) => {
            format!(
                "{sentence}; this scp command holds a shell character (; & | < > ` $ ( ) or a \
                 line break) the target's shell would act on, so it is not run as scp; \
                 copy without -O (scp then uses sftp, which takes any file name)"
            )
        }
        _ => sentence,
    }
}

/// The name of an allow entry as written in the config.
pub fn allow_name(a: Allow) -> &'static str {
    match a {
        Allow::Shell => "shell",
        Allow::Exec => "exec",
        Allow::Sftp => "sftp",
        Allow::Scp => "scp",
        Allow::PortForward => "port-forward",
        Allow::AgentForward => "agent-forward",
    }
}

/// `Ok` when `allowed` holds one of `needs`; else the sentence to show the user.
pub fn check(
    allowed: &[Allow],
    needs: &[Allow],
    what: &str,
    role: &str,
    target: &str,
) -> Result<(), String> {
    if needs.iter().any(|n| allowed.contains(n)) {
        return Ok(());
    }
    if needs.is_empty() {
        // No allow entry permits it (a subsystem other than sftp): naming the role's
        // entries would suggest one might.
        return Err(format!("{what} is not served through portcullis"));
    }
    let names: Vec<&str> = allowed.iter().map(|a| allow_name(*a)).collect();
    Err(format!(
        "role {role} on {target} does not allow {what} (allowed: {})",
        if names.is_empty() {
            "nothing".to_string()
        } else {
            names.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_scp_refused_for_a_shell_character_says_so() {
        let scp = [Allow::Scp];
        let said = |cmd: &str, allowed: &[Allow]| {
            scp_refusal(&Start::Exec(cmd.into()), allowed, "no".into())
        };
        for cmd in ["scp -t /tmp/a$(b).txt", "scp -f 'x;y'", "scp -p -f a&b"] {
            assert!(said(cmd, &scp).contains("shell character"), "{cmd}");
            // A role without scp is told only that exec is not allowed.
            assert_eq!(said(cmd, &[Allow::Sftp]), "no", "{cmd}");
        }
        // Not scp with or without the characters: nothing to explain.
        for cmd in ["id; scp -t x", "scp -S $(evil) -t x", "cat x | sh"] {
            assert_eq!(said(cmd, &scp), "no", "{cmd}");
        }
    }

    #[test]
    fn needs_table() {
        let cases = [
            (Start::Shell, "shell", vec![Allow::Shell]),
            (
                Start::Exec("scp -t /tmp/".into()),
                "scp",
                vec![Allow::Scp, Allow::Exec],
            ),
            (
                Start::Exec("/usr/bin/scp -f x".into()),
                "scp",
                vec![Allow::Scp, Allow::Exec],
            ),
            (Start::Exec("scpx".into()), "exec", vec![Allow::Exec]),
            (
                Start::Exec("scp -v -r -p -d -t -- '/tmp/a b/*.log' ~/x".into()),
                "scp",
                vec![Allow::Scp, Allow::Exec],
            ),
            // Anything more than scp is an exec, whatever it starts with.
            (
                Start::Exec("scp -t /tmp/y && id".into()),
                "exec",
                vec![Allow::Exec],
            ),
            (
                Start::Exec("scp -t /tmp/x; touch m".into()),
                "exec",
                vec![Allow::Exec],
            ),
            (
                Start::Exec("scp -t x | sh".into()),
                "exec",
                vec![Allow::Exec],
            ),
            (
                Start::Exec("scp -t $(id)".into()),
                "exec",
                vec![Allow::Exec],
            ),
            (Start::Exec("scp -t `id`".into()), "exec", vec![Allow::Exec]),
            (
                Start::Exec("scp -f x > /etc/passwd".into()),
                "exec",
                vec![Allow::Exec],
            ),
            (
                Start::Exec("scp -t x\nid".into()),
                "exec",
                vec![Allow::Exec],
            ),
            (
                Start::Exec("/tmp/evil/scp -t x".into()),
                "exec",
                vec![Allow::Exec],
            ),
            (
                Start::Exec("scp -S /tmp/evil -t x".into()),
                "exec",
                vec![Allow::Exec],
            ),
            (Start::Exec("scp x".into()), "exec", vec![Allow::Exec]),
            (Start::Exec("scp -t -f x".into()), "exec", vec![Allow::Exec]),
            (
                Start::Exec("rsync --server .".into()),
                "exec",
                vec![Allow::Exec],
            ),
            (
                Start::Subsystem("sftp".into()),
                "sftp",
                vec![Allow::Sftp, Allow::Scp],
            ),
            (Start::Subsystem("netconf".into()), "subsystem", vec![]),
        ];
        for (start, kind, needs) in cases {
            assert_eq!(start.kind(), kind, "{start:?}");
            assert_eq!(start.needs(), needs.as_slice(), "{start:?}");
        }
    }

    #[test]
    fn refusal_names_role_and_allowed() {
        assert_eq!(
            check(&[Allow::Sftp], &[Allow::Shell], "shell", "ro", "web-1"),
            Err("role ro on web-1 does not allow shell (allowed: sftp)".into())
        );
        assert!(check(&[Allow::Exec], &[Allow::Scp, Allow::Exec], "scp", "r", "t").is_ok());
        assert_eq!(
            check(&[Allow::Shell], &[], "subsystem netconf", "r", "t"),
            Err("subsystem netconf is not served through portcullis".into())
        );
    }
}
