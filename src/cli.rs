//! Command-line types only: clap parses and validates; nothing happens here.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "canopy",
    version,
    about = "GitOps for a tree of Kubernetes clusters",
    long_about = "canopy reads a fleet repository (clusters, workloads, placement, overrides), \
divides replicas down the cluster tree and renders the exact manifests every cluster should run.",
    after_help = "Exit codes: 0 success; 1 differences (diff only); 2 invalid fleet or usage error (every problem is listed with file, line and YAML path); 3 I/O or state error (a folder or file could not be read or written, state locked); 4 some cluster failed or was skipped (apply, diff)."
)]
pub struct Cli {
    /// Name written in the canopy.dev/fleet label (default: the fleet folder's name).
    #[arg(long, global = true, value_name = "NAME")]
    pub fleet_name: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a fleet and list every problem at once.
    #[command(after_help = "Example:\n  canopy validate fleet-example")]
    Validate {
        /// The fleet folder.
        dir: PathBuf,
        #[arg(short, long, value_enum, default_value_t = TextOrJson::Text)]
        output: TextOrJson,
    },
    /// Show the cluster tree, its labels, and which workloads land where.
    #[command(after_help = "Example:\n  canopy tree fleet-example")]
    Tree { dir: PathBuf },
    /// Render the manifests every cluster should run.
    #[command(
        after_help = "Examples:\n  canopy render fleet-example\n  canopy render fleet-example --cluster eu-west-1 -o json\n  canopy render fleet-example --out rendered/"
    )]
    Render {
        dir: PathBuf,
        /// Only these clusters (repeatable).
        #[arg(long = "cluster", value_name = "CLUSTER")]
        clusters: Vec<String>,
        /// Write one folder per cluster, nested like the tree, instead of printing.
        #[arg(long, value_name = "OUTDIR")]
        out: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value_t = YamlOrJson::Yaml)]
        output: YamlOrJson,
        /// Print Secret values instead of masking them as runs of `+`.
        #[arg(long)]
        show_secrets: bool,
    },
    /// Explain why each cluster was or was not chosen for a workload, and how
    /// its replicas were divided level by level.
    #[command(
        after_help = "Examples:\n  canopy explain fleet-example web\n  canopy explain fleet-example web --cluster eu-west-1"
    )]
    Explain {
        dir: PathBuf,
        workload: String,
        /// Only this cluster and the divisions on its path.
        #[arg(long, value_name = "CLUSTER")]
        cluster: Option<String>,
        #[arg(short, long, value_enum, default_value_t = TextOrJson::Text)]
        output: TextOrJson,
    },
    /// Apply the rendered fleet down the tree: parents before children,
    /// clusters of a level in parallel, a failed parent stops its subtree.
    #[command(
        after_help = "Examples:\n  canopy apply fleet-example\n  canopy apply fleet-example --dry-run\n  canopy apply fleet-example --subtree eu --prune=false\n\nExit codes: 0 applied (or nothing to do); 4 some cluster failed or was skipped; 2 invalid fleet or usage; 3 state folder unusable (locked, unreadable)."
    )]
    Apply {
        dir: PathBuf,
        #[command(flatten)]
        target: Target,
        /// Compute and print the changes, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Delete owned objects that are no longer rendered (`--prune=false` to keep them).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
        prune: bool,
        /// Delete what canopy owns in clusters that left the fleet.
        #[arg(long)]
        prune_clusters: bool,
        /// Clusters of one tree level reconciled at once.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
        concurrency: u16,
        /// Take over fields another field manager owns (server-side apply
        /// conflicts); without it a conflict fails the cluster and names
        /// the manager and the field.
        #[arg(long)]
        force_conflicts: bool,
        /// After writing a cluster, wait until what was written is healthy
        /// (rolled out, complete, established) before its children.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits per cluster, e.g. 90s or 5m.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
        timeout: std::time::Duration,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Compare the rendered fleet with live state (`kubectl diff` exit codes).
    #[command(
        after_help = "Examples:\n  canopy diff fleet-example\n  canopy diff fleet-example --cluster eu-west-1 -o json\n  canopy diff fleet-example -o markdown > comment.md\n  canopy diff fleet-example --base origin/main -o markdown\n\nExit codes: 0 no differences; 1 differences; 2 invalid fleet or usage; 3 state unusable; 4 some cluster could not be compared."
    )]
    Diff {
        dir: PathBuf,
        #[command(flatten)]
        target: Target,
        #[arg(short, long, value_enum, default_value_t = DiffFormat::Text)]
        output: DiffFormat,
        /// Compare with the fleet as it is at this Git revision instead of
        /// live state: no cluster and no credentials needed (pull requests).
        #[arg(long, value_name = "REF")]
        base: Option<String>,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// The tree with, per cluster, reachable or not, in sync or drifted,
    /// and the last applied revision.
    #[command(after_help = "Example:\n  canopy status fleet-example")]
    Status {
        dir: PathBuf,
        /// The local backend's state folder (default: DIR/.canopy/state).
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value_t = TextOrJson::Text)]
        output: TextOrJson,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Print (or write) the JSON Schemas of canopy's documents.
    #[command(after_help = "Example:\n  canopy schema --out schemas/")]
    Schema {
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// Which clusters a command acts on, and where their local state is.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// Only this cluster (repeatable).
    #[arg(long = "cluster", value_name = "CLUSTER")]
    pub clusters: Vec<String>,
    /// Only this cluster and its descendants (repeatable).
    #[arg(long = "subtree", value_name = "CLUSTER")]
    pub subtrees: Vec<String>,
    /// The local backend's state folder (default: DIR/.canopy/state).
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
}

/// How canopy talks to clusters with `spec.connection`.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// Requests in flight at once per Kubernetes cluster.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=512), value_name = "N")]
    pub kube_requests: u16,
    /// Requests per second per Kubernetes cluster (client-side limit).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub kube_qps: u32,
    /// Requests allowed above --kube-qps in a burst.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub kube_burst: u32,
    /// Timeout of one request to a Kubernetes API server.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub request_timeout: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TextOrJson {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum YamlOrJson {
    Yaml,
    Json,
}
