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
    after_help = "Exit codes: 0 success; 2 invalid fleet or usage error (every problem is listed with file, line and YAML path); 3 I/O error (a folder or file could not be read or written)."
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
    /// Print (or write) the JSON Schemas of canopy's documents.
    #[command(after_help = "Example:\n  canopy schema --out schemas/")]
    Schema {
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
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
