//! Log set-up for the two ways the handler runs. Neither ever logs the ResponseURL.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

const DEFAULT_FILTER: &str = "info,aws_config=warn,aws_smithy_runtime=warn";

/// `RUST_LOG` as a list of `target=level` directives and a bare default level
/// (`info,bootstrap=debug`), or the default. Not `EnvFilter`: its span and field directives are
/// not needed here, and its regular expressions would be most of the size of the logging code.
fn filter() -> Targets {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|text| parse_filter(&text))
        .unwrap_or_else(|| DEFAULT_FILTER.parse().expect("a valid default filter"))
}

/// None for a filter with no directive, or one that does not parse (said on stderr). Spaces and
/// empty directives are dropped, as EnvFilter drops them: Targets would read an empty one as
/// every target at TRACE.
fn parse_filter(text: &str) -> Option<Targets> {
    let directives: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return None;
    }
    directives
        .join(",")
        .parse::<Targets>()
        .inspect_err(|e| eprintln!("RUST_LOG ignored ({e}): {text}"))
        .ok()
}

/// Lambda: one JSON object per line, which CloudWatch Logs Insights can query by field.
pub fn init_lambda() {
    tracing::subscriber::set_global_default(lambda_subscriber(std::io::stdout))
        .expect("logging is set up once");
}

/// What Lambda logs, written to `writer` (the tests capture it to look for secrets).
pub fn lambda_subscriber<W>(writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let json = fmt::layer()
        .json()
        .with_current_span(false)
        .with_target(false)
        .without_time()
        .with_writer(writer);
    tracing_subscriber::registry().with(json.with_filter(filter()))
}

/// The command line: short human-readable progress on stderr, so stdout holds only the response.
pub fn init_cli() {
    let human = fmt::layer()
        .compact()
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    tracing_subscriber::registry()
        .with(human.with_filter(filter()))
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn rust_log_reads_as_envfilter_read_it() {
        let filter = parse_filter(" info, aws_config=warn ,bootstrap=debug,").unwrap();
        assert!(filter.would_enable("bootstrap", &Level::DEBUG));
        assert!(filter.would_enable("ecs_ami::engine", &Level::INFO));
        assert!(!filter.would_enable("ecs_ami::engine", &Level::DEBUG));
        assert!(!filter.would_enable("aws_config::loader", &Level::INFO));
        assert!(filter.would_enable("aws_config::loader", &Level::WARN));
        assert!(
            !filter.would_enable("hyper", &Level::TRACE),
            "no empty directive"
        );
        assert!(parse_filter("").is_none());
        assert!(parse_filter(" , ").is_none());
        assert!(parse_filter("bootstrap=loud").is_none());
    }
}
