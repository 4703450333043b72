//! The one list of settings. Each row says its variable, the exporter-toolkit flag that
//! overrides it, its default and meaning (for `--help` and the misspelt-variable warning),
//! and the parser that checks its value and puts it in its place in [`Config`].

use super::parse::{
    parse_api_url, parse_bool, parse_byte_limit, parse_callback_url, parse_client_secret_file,
    parse_interval, parse_listen_address, parse_log_format, parse_log_level, parse_max_connections,
    parse_meastypes, parse_names, parse_path, parse_public_url, parse_redirect_uri,
    parse_requests_per_minute, parse_seconds, parse_telemetry_path, token_var,
};
use super::{
    Config, ConfigError, DEFAULT_ACCOUNT_URL, DEFAULT_API_URL, DEFAULT_LISTEN_ADDRESS,
    DEFAULT_LOG_LEVEL, DEFAULT_REDIRECT_URI, DEFAULT_TELEMETRY_PATH, RUST_LOG, invalid,
};
use crate::secret::Secret;
use std::collections::BTreeMap;

/// A command-line flag standing for a setting: exporter-toolkit's name and what `--help`
/// calls its value.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    pub name: &'static str,
    pub value_name: &'static str,
}

/// What a row does with its variable's value.
#[derive(Clone, Copy)]
enum Apply {
    /// Called with the value when the variable is set and not blank.
    Set(fn(&mut Config, &str, &Vars) -> Result<(), ConfigError>),
    /// Called whether or not it is set: for a setting with a fallback of its own.
    Always(fn(&mut Config, Option<&str>, &Vars) -> Result<(), ConfigError>),
}

/// One setting.
#[derive(Clone, Copy)]
pub struct Setting {
    pub variable: &'static str,
    pub flag: Option<Flag>,
    pub default: &'static str,
    pub meaning: &'static str,
    /// When it is checked relative to the others: the first bad value stops the start, and
    /// it is the one it has always been. Equal ranks go in table order.
    rank: u8,
    apply: Apply,
}

impl std::fmt::Debug for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setting")
            .field("variable", &self.variable)
            .field("flag", &self.flag)
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

const fn flag(name: &'static str, value_name: &'static str) -> Option<Flag> {
    Some(Flag { name, value_name })
}

pub const SETTINGS: &[Setting] = &[
    Setting {
        variable: "WITHINGS_LISTEN_ADDRESS",
        flag: flag("web.listen-address", "ADDRESS"),
        default: DEFAULT_LISTEN_ADDRESS,
        meaning: "where to serve; :PORT means all interfaces, a host name is resolved at start",
        rank: 1,
        apply: Apply::Set(|c, v, _| {
            c.server.listen_address = parse_listen_address(v)?;
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_WEB_CONFIG_FILE",
        flag: flag("web.config.file", "FILE"),
        default: "",
        meaning: "exporter-toolkit web configuration: TLS and basic auth",
        rank: 10,
        // Checked by the web configuration at start, where a bad file can be named with
        // its key.
        apply: Apply::Set(|c, v, _| {
            c.server.web_config_file = Some(v.into());
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_WEB_MAX_CONNECTIONS",
        flag: None,
        default: "512",
        meaning: "HTTP connections open at once; at the cap the idlest is closed to make room",
        rank: 19,
        apply: Apply::Set(|c, v, _| {
            c.server.max_connections = parse_max_connections(v)?;
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_TELEMETRY_PATH",
        flag: flag("web.telemetry-path", "PATH"),
        default: DEFAULT_TELEMETRY_PATH,
        meaning: "path under which the metrics are served",
        rank: 18,
        apply: Apply::Set(|c, v, _| {
            c.server.telemetry_path = parse_telemetry_path(v)?;
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_LOG_LEVEL",
        flag: flag("log.level", "FILTER"),
        default: DEFAULT_LOG_LEVEL,
        meaning: "log filter: error, warn, info, debug, trace, or target=level directives (RUST_LOG is read when this is unset)",
        rank: 0,
        apply: Apply::Always(|c, v, vars| {
            c.log.level = match (v, vars.get_exact(RUST_LOG)) {
                (Some(level), _) => parse_log_level("WITHINGS_LOG_LEVEL", level)?,
                (None, Some(level)) => parse_log_level(RUST_LOG, level)?,
                (None, None) => DEFAULT_LOG_LEVEL.to_owned(),
            };
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_LOG_FORMAT",
        flag: flag("log.format", "FORMAT"),
        default: "logfmt",
        meaning: "log format: logfmt or json (one object per line)",
        rank: 0,
        apply: Apply::Set(|c, v, _| {
            c.log.format = parse_log_format(v)?;
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_TOKEN_DIR",
        flag: None,
        default: "",
        meaning: "a directory of accounts: each NAME.json in it is the account NAME, served on /probe?account=NAME and listed on /sd",
        rank: 15,
        apply: Apply::Set(|c, v, vars| {
            c.accounts.token_dir = Some(parse_path(v));
            for (variable, set) in [
                (
                    "WITHINGS_TOKEN_FILE",
                    vars.get("WITHINGS_TOKEN_FILE").is_some(),
                ),
                ("WITHINGS_ACCESS_TOKEN", c.accounts.access_token.is_some()),
                (
                    "WITHINGS_REFRESH_TOKEN",
                    vars.get("WITHINGS_REFRESH_TOKEN").is_some(),
                ),
            ] {
                if set {
                    return Err(invalid(
                        variable,
                        "set together with WITHINGS_TOKEN_DIR; use one or the other: WITHINGS_TOKEN_DIR serves every NAME.json in that directory as an account, the others serve one account",
                    ));
                }
            }
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_REQUESTS_PER_MINUTE",
        flag: None,
        default: "100",
        meaning: "requests to Withings in any 60 seconds, all accounts and endpoints together (Withings allows 120 per application)",
        rank: 16,
        apply: Apply::Set(|c, v, _| {
            c.withings.requests_per_minute = parse_requests_per_minute(v)?;
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_COLLECTORS",
        flag: None,
        default: "measures",
        meaning: "kinds of data to fetch, comma-separated: measures, activity, sleep, devices, workouts, intraday, sleep_detail, heart, goals (each costs one request per account per fetch; goals one an hour at most)",
        rank: 17,
        apply: Apply::Set(|c, v, _| {
            c.collectors.names = Some(parse_names(v));
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_ACCESS_TOKEN",
        flag: None,
        default: "",
        meaning: "a fixed access token, used when no client credentials are set (expires after 3 hours)",
        rank: 3,
        apply: Apply::Set(|c, v, _| {
            c.accounts.access_token = Some(token_var("WITHINGS_ACCESS_TOKEN", v)?);
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_CLIENT_ID",
        flag: None,
        default: "",
        meaning: "your Withings application's client id; with a client secret, tokens are refreshed",
        rank: 23,
        apply: Apply::Set(|c, v, _| {
            c.withings.client_id = Some(v.trim().to_owned());
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_CLIENT_SECRET",
        flag: None,
        default: "",
        meaning: "the application's client secret",
        rank: 7,
        apply: Apply::Set(|c, v, vars| {
            if vars.get("WITHINGS_CLIENT_SECRET_FILE").is_some() {
                return Err(both_secrets());
            }
            c.withings.client_secret = Some(Secret::new(v.trim()));
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_CLIENT_SECRET_FILE",
        flag: None,
        default: "",
        meaning: "a file holding the client secret instead",
        rank: 7,
        apply: Apply::Set(|c, v, vars| {
            if vars.get("WITHINGS_CLIENT_SECRET").is_some() {
                return Err(both_secrets());
            }
            c.withings.client_secret = Some(parse_client_secret_file(v)?);
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_TOKEN_FILE",
        flag: None,
        default: "",
        meaning: "where the tokens are kept (on a persistent volume)",
        rank: 15,
        apply: Apply::Set(|c, v, _| {
            c.accounts.token_file = Some(parse_path(v));
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_REFRESH_TOKEN",
        flag: None,
        default: "",
        meaning: "a refresh token to start from when the token file does not exist yet",
        rank: 23,
        apply: Apply::Set(|c, v, _| {
            c.accounts.refresh_token = Some(token_var("WITHINGS_REFRESH_TOKEN", v)?);
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_PUBLIC_URL",
        flag: None,
        default: "",
        meaning: "the exporter's address as a browser reaches it (e.g. https://health.example.org): invite links are {URL}/invite/..., and {URL}/auth/callback is the callback to register for the Withings application",
        rank: 24,
        apply: Apply::Set(|c, v, _| {
            c.server.public_url = Some(parse_public_url("WITHINGS_PUBLIC_URL", v)?);
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_GRAFANA_URL",
        flag: None,
        default: "",
        meaning: "the Grafana dashboard the landing page links each person to",
        rank: 25,
        apply: Apply::Set(|c, v, _| {
            c.server.grafana_url = Some(parse_public_url("WITHINGS_GRAFANA_URL", v)?);
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_REDIRECT_URI",
        flag: None,
        default: DEFAULT_REDIRECT_URI,
        meaning: "for auth: the callback URL registered for the application",
        rank: 9,
        apply: Apply::Set(|c, v, _| {
            c.withings.redirect_uri = parse_redirect_uri(v)?;
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_ACCOUNT_URL",
        flag: None,
        default: DEFAULT_ACCOUNT_URL,
        meaning: "base of the authorization page",
        rank: 8,
        apply: Apply::Set(|c, v, _| {
            c.withings.account_url = parse_api_url("WITHINGS_ACCOUNT_URL", v)?;
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_API_URL",
        flag: None,
        default: DEFAULT_API_URL,
        meaning: "the Withings API",
        rank: 2,
        apply: Apply::Set(|c, v, _| {
            c.withings.api_url = parse_api_url("WITHINGS_API_URL", v)?;
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_MEASTYPES",
        flag: None,
        default: "every type in the measure table",
        meaning: "Withings measure types to fetch",
        rank: 4,
        apply: Apply::Set(|c, v, _| {
            c.collectors.meastypes = Some(parse_meastypes(v)?);
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_INCLUDE_AMBIGUOUS",
        flag: None,
        default: "true",
        meaning: "whether readings marked ambiguous (attrib 1) count",
        rank: 5,
        apply: Apply::Set(|c, v, _| {
            c.collectors.include_ambiguous = parse_bool("WITHINGS_INCLUDE_AMBIGUOUS", v)?;
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_TIMEOUT_SECONDS",
        flag: None,
        default: "20",
        meaning: "limit for each request to Withings",
        rank: 6,
        apply: Apply::Set(|c, v, _| {
            c.withings.upstream_timeout = parse_seconds("WITHINGS_TIMEOUT_SECONDS", v)?;
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_CONNECT_TIMEOUT_SECONDS",
        flag: None,
        default: "5",
        meaning: "limit for opening a connection to Withings",
        rank: 11,
        apply: Apply::Set(|c, v, _| {
            c.withings.connect_timeout = parse_seconds("WITHINGS_CONNECT_TIMEOUT_SECONDS", v)?;
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_MAX_RESPONSE_BYTES",
        flag: None,
        default: "33554432",
        meaning: "Withings answers larger than this are refused",
        rank: 12,
        apply: Apply::Set(|c, v, _| {
            c.withings.max_response_bytes = parse_byte_limit("WITHINGS_MAX_RESPONSE_BYTES", v)?;
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_MIN_FETCH_INTERVAL_SECONDS",
        flag: None,
        default: "0",
        meaning: "scrapes sooner than this after the last fetch get its result",
        rank: 13,
        apply: Apply::Set(|c, v, _| {
            c.accounts.min_fetch_interval =
                parse_interval("WITHINGS_MIN_FETCH_INTERVAL_SECONDS", v)?;
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_CALLBACK_URL",
        flag: None,
        default: "",
        meaning: "public HTTPS URL at which Withings notifies this exporter (push); a secret path segment is appended",
        rank: 20,
        apply: Apply::Set(|c, v, _| {
            c.notify.callback_url = Some(parse_callback_url(v)?);
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_REMOTE_WRITE_URL",
        flag: None,
        default: "",
        meaning: "Prometheus remote-write endpoint (e.g. http://prometheus:9090/api/v1/write) that `backfill --remote-write` writes to; with WITHINGS_REMOTE_WRITE_INSTANCE the running exporter writes each account's settled history there as it arrives",
        rank: 20,
        apply: Apply::Set(|c, v, _| {
            c.remote_write.url = Some(parse_api_url("WITHINGS_REMOTE_WRITE_URL", v)?);
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_REMOTE_WRITE_CONFIG_FILE",
        flag: None,
        default: "",
        meaning: "YAML file in the shape of one Prometheus remote_write entry: url, auth, headers, TLS, queue_config (docs/remote-write.md)",
        rank: 20,
        // Read when a command writes, where a bad file can be named with its key.
        apply: Apply::Set(|c, v, _| {
            c.remote_write.config_file = Some(parse_path(v));
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_REMOTE_WRITE_INSTANCE",
        flag: None,
        default: "",
        meaning: "the instance label Prometheus gives this exporter's scraped series (the host:port it scrapes, e.g. withings-exporter:19100): with a remote-write URL, `serve` writes each account's settled history under it",
        rank: 20,
        apply: Apply::Set(|c, v, _| {
            c.remote_write.instance = Some(v.trim().to_owned());
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_REMOTE_WRITE_JOB",
        flag: None,
        default: "withings",
        meaning: "the job label of the series `serve` writes by remote write: the job name of the accounts' scrape configuration",
        rank: 20,
        apply: Apply::Set(|c, v, _| {
            c.remote_write.job = v.trim().to_owned();
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_NOTIFY_MIN_INTERVAL_SECONDS",
        flag: None,
        default: "30",
        meaning: "at most one notification-driven fetch per account in this interval",
        rank: 21,
        apply: Apply::Set(|c, v, _| {
            c.notify.min_interval = parse_seconds("WITHINGS_NOTIFY_MIN_INTERVAL_SECONDS", v)?;
            Ok(())
        }),
    },
    Setting {
        variable: "WITHINGS_SAFETY_POLL_SECONDS",
        flag: None,
        default: "3600",
        meaning: "with notifications, a subscribed account still has every collector fetched this often",
        rank: 22,
        apply: Apply::Set(|c, v, _| {
            c.notify.safety_poll = parse_seconds("WITHINGS_SAFETY_POLL_SECONDS", v)?;
            Ok(())
        }),
    },
];

fn both_secrets() -> ConfigError {
    invalid(
        "WITHINGS_CLIENT_SECRET_FILE",
        "set together with WITHINGS_CLIENT_SECRET; set only one of them",
    )
}

/// Variables of settings being added on other branches: known, so that setting one is not
/// reported as a misspelling. Each moves into [`SETTINGS`] when the code that reads it lands.
const RESERVED_VARIABLES: &[&str] = &[];

/// The variables as given, looked up the way each has always been read.
pub(super) struct Vars<'a>(&'a [(String, String)]);

impl Vars<'_> {
    /// A setting's value, unless blank. The part after `WITHINGS_` matches in any case,
    /// the last one given winning: as the variables were read before this table.
    fn get(&self, variable: &str) -> Option<&str> {
        let suffix = variable.strip_prefix("WITHINGS_")?;
        self.0
            .iter()
            .rev()
            .find(|(name, _)| {
                name.strip_prefix("WITHINGS_")
                    .is_some_and(|n| n.eq_ignore_ascii_case(suffix))
            })
            .map(|(_, value)| value.as_str())
            .filter(|v| !v.trim().is_empty())
    }

    /// The logging variables are read first, by their exact names (the first given wins),
    /// before the rest can be.
    fn get_exact(&self, variable: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name == variable)
            .map(|(_, value)| value.as_str())
            .filter(|v| !v.trim().is_empty())
    }
}

/// Which settings [`apply`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    /// Only logging, read before anything else so that what follows is logged as asked.
    Log,
    All,
}

fn is_log(s: &Setting) -> bool {
    s.variable.starts_with("WITHINGS_LOG_")
}

/// Checks every setting of `part` that `vars` sets, in rank order, into `config`.
pub(super) fn apply(
    config: &mut Config,
    vars: &[(String, String)],
    part: Part,
) -> Result<(), ConfigError> {
    let vars = Vars(vars);
    let mut rows: Vec<&Setting> = SETTINGS
        .iter()
        .filter(|s| part == Part::All || is_log(s))
        .collect();
    rows.sort_by_key(|s| s.rank);
    for row in rows {
        let value = if is_log(row) {
            vars.get_exact(row.variable)
        } else {
            vars.get(row.variable)
        };
        match (row.apply, value) {
            (Apply::Set(set), Some(value)) => set(config, value, &vars)?,
            (Apply::Set(_), None) => {}
            (Apply::Always(set), value) => set(config, value, &vars)?,
        }
    }
    Ok(())
}

/// The `--help` section listing every setting with its variable and default.
pub fn settings_help() -> String {
    let mut text = String::from(
        "Settings (environment variables; a flag, where there is one, wins over its variable):\n",
    );
    for s in SETTINGS {
        let flag = s
            .flag
            .map(|f| format!(" (--{})", f.name))
            .unwrap_or_default();
        let default = if s.default.is_empty() {
            String::new()
        } else {
            format!(" [default: {}]", s.default)
        };
        text.push_str(&format!(
            "  {}{flag}{default}\n      {}\n",
            s.variable, s.meaning
        ));
    }
    text
}

/// The help line of a flag: its setting's meaning, variable and default.
pub fn flag_help(variable: &str) -> String {
    match SETTINGS.iter().find(|s| s.variable == variable) {
        Some(s) if s.default.is_empty() => format!("{} [env: {}]", s.meaning, s.variable),
        Some(s) => format!(
            "{} [env: {}] [default: {}]",
            s.meaning, s.variable, s.default
        ),
        None => String::new(),
    }
}

/// The settings that have a command-line flag, in table order.
pub fn flags() -> impl Iterator<Item = (&'static Setting, Flag)> {
    SETTINGS.iter().filter_map(|s| s.flag.map(|f| (s, f)))
}

/// The variables with the command line's values put in place of theirs: a flag wins.
pub fn with_overrides(
    vars: impl IntoIterator<Item = (String, String)>,
    overrides: impl IntoIterator<Item = (&'static str, String)>,
) -> Vec<(String, String)> {
    let mut map: BTreeMap<String, String> = vars.into_iter().collect();
    for (variable, value) in overrides {
        map.insert(variable.to_owned(), value);
    }
    map.into_iter().collect()
}

/// One warning per `WITHINGS_*` variable that is no setting, naming the closest one.
pub fn misspelt_variables(vars: &[(String, String)]) -> Vec<String> {
    let known = || {
        SETTINGS
            .iter()
            .map(|s| s.variable)
            .chain(RESERVED_VARIABLES.iter().copied())
    };
    vars.iter()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("WITHINGS_") && !known().any(|k| k == name.as_str()))
        .map(|name| {
            let closest = known()
                .min_by_key(|k| edit_distance(name, k))
                .unwrap_or(DEFAULT_LISTEN_ADDRESS);
            format!("{name} is not a setting and is ignored; did you mean {closest}?")
        })
        .collect()
}

/// Levenshtein distance over bytes (variable names are ASCII).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}
