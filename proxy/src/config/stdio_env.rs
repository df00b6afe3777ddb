//! Which of the proxy's environment variables a stdio server's child inherits.
//!
//! The proxy's environment holds its own secrets (`MCP_PROXY_ADMIN_TOKEN`,
//! `MCP_PROXY_SESSION_KEY`) and often other credentials of whoever started it, while a child is
//! frequently third-party code (`npx -y some-server`) whose tools can hand their environment to
//! any client. So a child starts from an empty environment and gets:
//! 1. the variables its `env_inherit` mode lets through: `"base"` (the default) the
//!    [`BASE`] set that programs and their launchers (`npx`, `uvx`, a shell) need to run,
//!    `"all"` every variable, `"none"` nothing;
//! 2. plus the names its `env_allow` list adds (exact, or a prefix ending in `*`);
//! 3. never a name starting with [`PROXY_OWN_PREFIX`], whatever 1 and 2 say;
//! 4. then the server's `env` table, which is explicit configuration and is always set as
//!    written.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use super::StdioCommand;

/// Prefix of the proxy's own variables, which no child inherits.
pub const PROXY_OWN_PREFIX: &str = "MCP_PROXY_";

/// What a child inherits by default: where to find programs (`PATH`), who and where it runs
/// as (`HOME`, `USER`, `LOGNAME`, `SHELL`; `npx` keeps its cache in `~/.npm`, `uvx` in
/// `~/.cache/uv` or `$XDG_CACHE_HOME`), the terminal, locale and time zone, and the temporary
/// and XDG base directories. The MCP SDKs' own stdio clients pass the first six.
/// Proxy settings (`HTTPS_PROXY`, ...), registry settings (`npm_config_*`, `UV_*`) and
/// `NODE_*` are not included: they may carry credentials; `env_allow` adds them.
pub const BASE: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TERM",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TMPDIR",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "XDG_RUNTIME_DIR",
];

/// A stdio server's `env_inherit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnvInherit {
    /// The [`BASE`] set.
    #[default]
    Base,
    /// Every variable but the proxy's own.
    All,
    /// Nothing (only `env_allow` and the `env` table).
    None,
}

/// Reads `env_inherit` and checks `env_allow`; the error says what to write instead.
pub(super) fn parse(
    inherit: Option<&str>,
    allow: &[String],
) -> Result<(EnvInherit, Vec<String>), String> {
    let inherit = match inherit {
        None | Some("base") => EnvInherit::Base,
        Some("all") => EnvInherit::All,
        Some("none") => EnvInherit::None,
        Some(other) => {
            return Err(format!(
                "env_inherit = \"{other}\" is not a mode; use \"base\" (PATH, HOME, locale, ...: \
                 the default), \"all\" (everything but MCP_PROXY_*) or \"none\""
            ))
        }
    };
    for entry in allow {
        let name = entry.strip_suffix('*').unwrap_or(entry);
        if (name.is_empty() && !entry.ends_with('*'))
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(format!(
                "env_allow entry \"{entry}\" is not a variable name; use a name such as \
                 \"HTTPS_PROXY\", or a prefix ending in * such as \"npm_config_*\""
            ));
        }
        if name.starts_with(PROXY_OWN_PREFIX) {
            return Err(format!(
                "env_allow entry \"{entry}\": the proxy's own {PROXY_OWN_PREFIX}* variables \
                 never reach a child; to give a child such a value, set it in the server's env table"
            ));
        }
    }
    Ok((inherit, allow.to_vec()))
}

/// Whether `name` matches `pattern` (a name, or a prefix ending in `*`).
fn matches(pattern: &str, name: &[u8]) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix.as_bytes()),
        None => name == pattern.as_bytes(),
    }
}

impl StdioCommand {
    /// Whether the child inherits the proxy's variable `name` (its `env` table aside).
    pub fn inherits(&self, name: &OsStr) -> bool {
        let name = name.as_bytes();
        if name.starts_with(PROXY_OWN_PREFIX.as_bytes()) {
            return false;
        }
        let by_mode = match self.env_inherit {
            EnvInherit::All => true,
            EnvInherit::None => false,
            EnvInherit::Base => BASE.iter().any(|p| matches(p, name)),
        };
        by_mode || self.env_allow.iter().any(|p| matches(p, name))
    }

    /// The child's whole environment, given the proxy's: what it inherits, then its `env`
    /// table (which wins over an inherited value of the same name).
    pub fn child_env<I, K, V>(&self, proxy_env: I) -> Vec<(std::ffi::OsString, std::ffi::OsString)>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<std::ffi::OsString>,
        V: Into<std::ffi::OsString>,
    {
        let mut out: Vec<(std::ffi::OsString, std::ffi::OsString)> = proxy_env
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(k, _)| self.inherits(k) && !self.env.iter().any(|(n, _)| k == n.as_str()))
            .collect();
        out.extend(self.env.iter().map(|(k, v)| (k.into(), v.into())));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(inherit: EnvInherit, allow: &[&str], env: &[(&str, &str)]) -> StdioCommand {
        StdioCommand {
            command: "x".into(),
            args: Vec::new(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            env_inherit: inherit,
            env_allow: allow.iter().map(|s| (*s).to_owned()).collect(),
            cwd: None,
            replicas: 1,
        }
    }

    const PROXY_ENV: &[(&str, &str)] = &[
        ("PATH", "/usr/bin"),
        ("HOME", "/home/p"),
        ("LC_ALL", "C.UTF-8"),
        ("MCP_PROXY_ADMIN_TOKEN", "t0ken"),
        ("MCP_PROXY_SESSION_KEY", "k3y"),
        ("AWS_SECRET_ACCESS_KEY", "aws"),
        ("HTTPS_PROXY", "http://proxy:3128"),
    ];

    fn names(c: &StdioCommand) -> Vec<String> {
        c.child_env(PROXY_ENV.iter().copied())
            .into_iter()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
            .collect()
    }

    #[test]
    fn base_is_the_default_and_the_proxys_own_never_pass() {
        let c = cmd(EnvInherit::default(), &[], &[("A", "1")]);
        assert_eq!(
            names(&c),
            ["PATH=/usr/bin", "HOME=/home/p", "LC_ALL=C.UTF-8", "A=1"]
        );
        let all = cmd(EnvInherit::All, &[], &[]);
        let got = names(&all);
        assert!(got.contains(&"AWS_SECRET_ACCESS_KEY=aws".to_owned()));
        assert!(!got.iter().any(|v| v.starts_with("MCP_PROXY_")), "{got:?}");
        let allow = cmd(EnvInherit::None, &["HTTPS_PROXY", "AWS_*", "*"], &[]);
        let got = names(&allow);
        assert!(!got.iter().any(|v| v.starts_with("MCP_PROXY_")), "{got:?}");
        let none = cmd(EnvInherit::None, &[], &[("PATH", "/bin")]);
        assert_eq!(names(&none), ["PATH=/bin"]);
    }

    #[test]
    fn the_env_table_wins_and_may_name_anything() {
        let c = cmd(
            EnvInherit::Base,
            &[],
            &[("HOME", "/srv"), ("MCP_PROXY_CONFIG", "/etc/inner.toml")],
        );
        assert_eq!(
            names(&c),
            [
                "PATH=/usr/bin",
                "LC_ALL=C.UTF-8",
                "HOME=/srv",
                "MCP_PROXY_CONFIG=/etc/inner.toml"
            ]
        );
    }

    #[test]
    fn parse_checks_modes_and_allow_entries() {
        assert_eq!(parse(None, &[]), Ok((EnvInherit::Base, vec![])));
        assert_eq!(parse(Some("all"), &[]).map(|r| r.0), Ok(EnvInherit::All));
        assert_eq!(parse(Some("none"), &[]).map(|r| r.0), Ok(EnvInherit::None));
        assert!(parse(Some("some"), &[])
            .unwrap_err()
            .contains("env_inherit"));
        let ok = [
            "HTTPS_PROXY".to_owned(),
            "npm_config_*".to_owned(),
            "*".to_owned(),
        ];
        assert!(parse(None, &ok).is_ok());
        for bad in ["MCP_PROXY_ADMIN_TOKEN", "MCP_PROXY_*", "", "A=B", "A*B"] {
            assert!(parse(None, &[bad.to_owned()]).is_err(), "{bad}");
        }
    }
}
