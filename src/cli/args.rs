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
    /// No progress line on stderr (it is shown only on a terminal, for
    /// apply, diff and watch's first round over many clusters).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a fleet and list every problem at once.
    #[command(after_help = "Example:\n  canopy validate fleet-example")]
    Validate {
        #[command(flatten)]
        source: SourceArgs,
        #[arg(short, long, value_enum, default_value_t = TextOrJson::Text)]
        output: TextOrJson,
    },
    /// Show the cluster tree, its labels, and which workloads land where.
    #[command(
        after_help = "Examples:\n  canopy tree fleet-example\n  canopy tree fleet-example -o json | jq '.clusters[] | select(.parent == \"eu\") | .name'"
    )]
    Tree {
        #[command(flatten)]
        source: SourceArgs,
        #[arg(short, long, value_enum, default_value_t = TextOrJson::Text)]
        output: TextOrJson,
    },
    /// Render the manifests every cluster should run.
    #[command(
        after_help = "Examples:\n  canopy render fleet-example\n  canopy render fleet-example --cluster eu-west-1 -o json\n  canopy render fleet-example --out rendered/"
    )]
    Render {
        #[command(flatten)]
        source: SourceArgs,
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
        #[command(flatten)]
        source: SourceArgs,
        /// The workload (with --repo, the only positional argument).
        workload: Option<String>,
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
        #[command(flatten)]
        source: SourceArgs,
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
        /// How long --wait waits per cluster, e.g. 90s or 5m; and how long
        /// apply waits for each relay child's report on its handoff.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
        timeout: std::time::Duration,
        /// Render and compare every cluster, also those of the local
        /// backend found in sync before whose render inputs and state file
        /// have not changed since (those are skipped otherwise).
        #[arg(long)]
        full: bool,
        #[arg(short, long, value_enum, default_value_t = TextOrJson::Text)]
        output: TextOrJson,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Compare the rendered fleet with live state (`kubectl diff` exit codes).
    #[command(
        after_help = "Examples:\n  canopy diff fleet-example\n  canopy diff fleet-example --cluster eu-west-1 -o json\n  canopy diff fleet-example -o markdown > comment.md\n  canopy diff fleet-example --base origin/main -o markdown\n\nExit codes: 0 no differences; 1 differences; 2 invalid fleet or usage; 3 state unusable; 4 some cluster could not be compared."
    )]
    Diff {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        target: Target,
        #[arg(short, long, value_enum, default_value_t = DiffFormat::Text)]
        output: DiffFormat,
        /// Compare with the fleet as it is at this Git revision instead of
        /// live state: no cluster and no credentials needed (pull requests).
        #[arg(long, value_name = "REF")]
        base: Option<String>,
        /// One section per cluster, as before, instead of each distinct
        /// change once with the clusters it reaches.
        #[arg(long)]
        no_group: bool,
        /// Render and compare every cluster, also those of the local
        /// backend found in sync before whose render inputs and state file
        /// have not changed since (those are skipped otherwise).
        #[arg(long)]
        full: bool,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// The tree with, per cluster, reachable or not, in sync or drifted,
    /// and the last applied revision.
    #[command(after_help = "Example:\n  canopy status fleet-example")]
    Status {
        #[command(flatten)]
        source: SourceArgs,
        /// The local backend's state folder (default: DIR/.canopy/state).
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value_t = TextOrJson::Text)]
        output: TextOrJson,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Follow a folder or a Git ref and keep the fleet applied: every new
    /// revision is applied incrementally (only clusters whose rendered
    /// objects changed), and live state is re-diffed periodically to correct
    /// drift. Stops cleanly on SIGINT/SIGTERM.
    #[command(
        after_help = "Examples:\n  canopy watch fleet-example\n  canopy watch --repo https://git.example.com/org/fleet.git --ref main --path fleet --listen 127.0.0.1:9464\n  canopy watch fleet-example --resync 1m --no-correct-drift --log-format json\n\nExit codes: 0 stopped by a signal; 2 usage error; 3 the state folder or the repository cannot be used at start."
    )]
    Watch {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        target: Target,
        /// How often a remote repository is fetched for new commits (a local
        /// one is watched for changes instead).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
        poll: std::time::Duration,
        /// How often every cluster's live state is re-diffed for drift
        /// (`0s` turns it off).
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
        resync: std::time::Duration,
        /// Report drift found by the periodic check, do not correct it.
        #[arg(long)]
        no_correct_drift: bool,
        /// How often the hubs are asked for join requests and member
        /// changes (two small lists per hub; `0s` turns it off, and joins
        /// are then answered on the next round for another reason).
        #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration, value_name = "DURATION")]
        join_poll: std::time::Duration,
        /// Delete owned objects that are no longer rendered.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
        prune: bool,
        /// Clusters of one tree level reconciled at once.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
        concurrency: u16,
        /// Take over fields another field manager owns.
        #[arg(long)]
        force_conflicts: bool,
        /// The longest wait before a failing cluster is retried (the wait
        /// doubles from 1s with each failure in a row).
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
        max_backoff: std::time::Duration,
        /// Log lines as text or as JSON objects.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Serve /healthz and Prometheus /metrics on this address, e.g.
        /// 127.0.0.1:9464.
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Run a relay: follow the handoff its parent level writes into the
    /// relay's own cluster, reconcile the relay's subtree from it as `apply`
    /// does, and report back into the handoff's status. Replicas elect one
    /// leader through a Lease. `canopy agent manifests` prints what runs it
    /// in a cluster.
    #[command(
        args_conflicts_with_subcommands = true,
        subcommand_negates_reqs = true,
        after_help = "Examples:\n  canopy agent --cluster eu --kubeconfig /etc/canopy/eu.kubeconfig --state /var/lib/canopy\n  canopy agent --cluster eu --local fleet-example/.canopy/state --state eu-state --once\n  canopy agent manifests --cluster eu --image registry.example.com/canopy:0.1.0 | kubectl apply -f -\n\nKubeconfig paths of the subtree's clusters (their spec.connection) are read in this agent's environment, relative to the current folder; ${VAR} in them is expanded here.\n\nExit codes: 0 stopped by a signal (or, with --once, the subtree reconciled, or another replica leads); 2 usage error; 3 the state folder cannot be used, or the round failed; 4 (--once) some cluster of the subtree failed, or the newest handoff was refused."
    )]
    Agent {
        #[command(subcommand)]
        command: Option<AgentCommand>,
        #[command(flatten)]
        run: AgentRun,
    },
    /// Staged rollouts: where each stands, and going on after a pause.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Join tokens: let a new cluster join a parent on its own.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Join this cluster (your kubeconfig's) to a parent, with a token from
    /// `canopy token create`: it is part of the fleet from the parent's
    /// next reconcile.
    #[command(
        after_help = "Example:\n  canopy join https://10.0.0.5:6443 --token \"$TOKEN\" --ca-sha256 sha256:3f1c... --name shop-17 --labels site=berlin\n\nExit codes: 0 joined; 2 usage, a refused join (the reason is printed) or a CA that does not match; 3 a server could not be reached or answered with an error."
    )]
    Join(JoinArgs),
    /// The clusters that joined: list them, write them as Cluster documents
    /// to commit, or remove one.
    #[command(subcommand)]
    Members(MembersCommand),
    /// Leave the fleet this cluster joined: its parent's reconciler retires
    /// it (its objects stay unless the parent applies with --prune-clusters).
    #[command(after_help = "Example:\n  canopy leave --kubeconfig shop-17.kubeconfig")]
    Leave {
        #[command(flatten)]
        own: OwnCluster,
    },
    /// Print (or write) the JSON Schemas of canopy's documents.
    #[command(after_help = "Example:\n  canopy schema --out schemas/")]
    Schema {
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  canopy completion bash > ~/.local/share/bash-completion/completions/canopy\n  canopy completion zsh > \"${fpath[1]}/_canopy\"\n  canopy completion fish > ~/.config/fish/completions/canopy.fish"
    )]
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Run in a cluster that joined in pull mode: read what its parent
    /// keeps for it in the hub (with the credentials `canopy join` stored
    /// in it), apply it to this cluster, say what was applied, and renew
    /// the credentials before they expire.
    #[command(
        after_help = "Examples:\n  canopy agent joined --kubeconfig shop-17.kubeconfig\n  canopy agent joined --once -o json\n\nExit codes: 0 stopped by a signal (or, with --once, applied); 3 the round failed (this cluster keeps what it runs)."
    )]
    Joined {
        #[command(flatten)]
        own: OwnCluster,
        /// How often the hub is asked for something new (one small read).
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
        poll: std::time::Duration,
        /// Apply everything again at least this often (drift).
        #[arg(long, default_value = "1m", value_parser = humantime::parse_duration, value_name = "DURATION")]
        resync: std::time::Duration,
        /// One round, then exit (what it applied on stdout).
        #[arg(long)]
        once: bool,
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        #[arg(short, long, value_enum, default_value_t = TextOrJson::Text)]
        output: TextOrJson,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Print the objects that run a relay's agent in its own cluster:
    /// Namespace, the Handoff CRD, ServiceAccount, a Role that allows only
    /// what the agent does there, RoleBinding, Deployment.
    #[command(
        after_help = "The clusters below the relay are reached with kubeconfigs from the Secret canopy-agent-kubeconfigs (mounted at /etc/canopy/kubeconfigs; write their spec.connection.kubeconfig as ${KUBECONFIGS}/NAME)."
    )]
    Manifests {
        /// The relay cluster.
        #[arg(long, value_name = "CLUSTER")]
        cluster: String,
        /// The agent's container image.
        #[arg(long, value_name = "IMAGE", default_value = concat!("ghcr.io/canopy-dev/canopy:", env!("CARGO_PKG_VERSION")))]
        image: String,
        /// Replicas (one leads, the others stand by).
        #[arg(long, default_value_t = 2)]
        replicas: u32,
        #[arg(short, long, value_enum, default_value_t = YamlOrJson::Yaml)]
        output: YamlOrJson,
    },
}

/// How `canopy agent` runs.
#[derive(Debug, clap::Args)]
pub struct AgentRun {
    /// The relay cluster this agent runs for.
    #[arg(long, value_name = "CLUSTER", required = true)]
    pub cluster: Option<String>,
    /// The relay's own cluster is in the embedded local backend, in this
    /// state folder (its parent level's).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["kubeconfig", "context"])]
    pub local: Option<PathBuf>,
    /// The kubeconfig that reaches the relay's own cluster (default:
    /// $KUBECONFIG, ~/.kube/config, or inside a pod its ServiceAccount).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<String>,
    /// The context of the kubeconfig (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// The agent's own state folder: the subtree's local-backend
    /// clusters, health and rollout records, the last good handoff.
    #[arg(long, value_name = "DIR", required = true)]
    pub state: Option<PathBuf>,
    /// One round, then exit (a report on stdout).
    #[arg(long)]
    pub once: bool,
    /// Reconcile the whole subtree at least this often (drift).
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub resync: std::time::Duration,
    /// How often the handoff's index is looked at for a new handoff (one
    /// small read of the relay's own cluster).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub poll: std::time::Duration,
    /// How long a leader's Lease lasts without renewal; it is renewed
    /// every third of it.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub lease_duration: std::time::Duration,
    /// This replica's name in the Lease (default: host name and pid).
    /// A `--once` run holds the Lease for --lease-duration after it
    /// ends, as its heartbeat: give runs from cron one fixed name.
    #[arg(long, value_name = "NAME")]
    pub identity: Option<String>,
    /// How long to wait for the report of a relay below.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub relay_timeout: std::time::Duration,
    /// Delete owned objects that are no longer rendered.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub prune: bool,
    /// Clusters of one tree level reconciled at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Take over fields another field manager owns.
    #[arg(long)]
    pub force_conflicts: bool,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[arg(short, long, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
    #[command(flatten)]
    pub kube: KubeArgs,
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Each stage of a workload's rollout and each cluster in it: pending,
    /// applying, healthy, failed or rolled back.
    #[command(
        after_help = "Examples:\n  canopy rollout status fleet-example web\n  canopy rollout status --repo . --ref main web -o json"
    )]
    Status {
        #[command(flatten)]
        source: SourceArgs,
        /// The workload (with --repo, the only positional argument).
        workload: Option<String>,
        /// The local backend's state folder, where rollouts are recorded.
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value_t = TextOrJson::Text)]
        output: TextOrJson,
    },
    /// Go on with a workload's rollout: a paused one starts its next stage,
    /// a failed or rolled-back one tries its failed stage again. Then the
    /// fleet is applied as `canopy apply` does, unless a `canopy watch`
    /// holds the state folder: it goes on by itself within seconds.
    #[command(
        after_help = "Examples:\n  canopy rollout continue fleet-example web\n\nExit codes: 0 continued; 2 nothing to continue, or usage; 3 state unusable; 4 some cluster failed or a stage failed its health gate."
    )]
    Continue {
        #[command(flatten)]
        source: SourceArgs,
        /// The workload (with --repo, the only positional argument).
        workload: Option<String>,
        /// The local backend's state folder, where rollouts are recorded.
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
        /// Clusters of one tree level reconciled at once.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
        concurrency: u16,
        /// `json`: `{"requested", "watchPid"}` when a watch goes on with it,
        /// else the apply's report as `apply -o json` gives it.
        #[arg(short, long, value_enum, default_value_t = TextOrJson::Text)]
        output: TextOrJson,
        #[command(flatten)]
        kube: KubeArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a join token in the hub of a parent (its nearest relay, else
    /// the top of its tree) and print the one command a newcomer runs.
    #[command(
        after_help = "Example:\n  canopy token create fleet-example --parent eu --ttl 2h --labels tier=edge,site=* --max-uses 20\n\n--labels lists what a newcomer may carry: key=value gives every member that label, key=* lets the newcomer choose the value. The token itself is printed once, in the join command, and never again."
    )]
    Create {
        #[command(flatten)]
        source: SourceArgs,
        /// The parent newcomers join.
        #[arg(long, value_name = "CLUSTER")]
        parent: String,
        /// How long the token admits newcomers.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, value_name = "DURATION")]
        ttl: std::time::Duration,
        /// Labels newcomers may carry (k=v fixed, k=* any value).
        #[arg(long, value_name = "K=V,...", default_value = "")]
        labels: String,
        /// How many new clusters it admits (re-joins of the same cluster do not count).
        #[arg(long, value_name = "N")]
        max_uses: Option<u32>,
    },
    /// The tokens of every hub of the fleet: parent, labels, uses, expiry.
    List {
        #[command(flatten)]
        source: SourceArgs,
        #[arg(short, long, value_enum, default_value_t = TextOrJson::Text)]
        output: TextOrJson,
    },
    /// Revoke a token: the API server refuses it at once, and requests made
    /// with it and not yet answered are refused.
    Revoke {
        #[command(flatten)]
        source: SourceArgs,
        /// The token's id (from `canopy token list`; with --repo, the only
        /// positional argument).
        id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// The joined clusters of every hub of the fleet.
    List {
        #[command(flatten)]
        source: SourceArgs,
        #[arg(short, long, value_enum, default_value_t = TextOrJson::Text)]
        output: TextOrJson,
    },
    /// Write the joined clusters as Cluster documents (one file each) to
    /// commit: Git then holds them, and a Cluster in Git wins over its
    /// joined twin. Push-mode members stay reached with the credentials
    /// they handed over (`connection: {joined: true}`).
    Export {
        #[command(flatten)]
        source: SourceArgs,
        /// The folder to write into (default: the fleet's `clusters/joined`).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Remove a joined cluster as if it had left (its objects stay unless
    /// the next apply has --prune-clusters).
    Remove {
        #[command(flatten)]
        source: SourceArgs,
        /// The joined cluster (with --repo, the only positional argument).
        name: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JoinMode {
    Push,
    Pull,
}

/// The cluster `canopy join` and `canopy leave` run for.
#[derive(Debug, Clone, clap::Args)]
pub struct OwnCluster {
    /// The kubeconfig of this cluster (default: $KUBECONFIG, ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<String>,
    /// Its context (default: the current one).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// How long to wait for each server, and for the parent's answer.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: std::time::Duration,
}

#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// The hub's API server, as `canopy token create` printed it.
    #[arg(value_name = "URL")]
    pub url: String,
    /// The join token (or set CANOPY_JOIN_TOKEN, which keeps it out of the
    /// shell's history and the process list).
    #[arg(
        long,
        env = "CANOPY_JOIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: String,
    /// The hub's CA, pinned: sha256:<hex> of its public key.
    #[arg(long, value_name = "sha256:HEX")]
    pub ca_sha256: String,
    /// This cluster's name in the fleet.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// The parent to join (default: the token's).
    #[arg(long, value_name = "CLUSTER")]
    pub parent: Option<String>,
    /// Labels for placement selectors, within what the token allows.
    #[arg(long, value_name = "K=V,...", default_value = "")]
    pub labels: String,
    /// push: the parent's reconciler reaches this cluster with credentials
    /// it hands over; pull: it hands over nothing, and its own agent
    /// (`canopy agent joined`) pulls and applies what the parent keeps
    /// for it in the hub (for a cluster its parent cannot reach).
    #[arg(long, value_enum, default_value_t = JoinMode::Push)]
    pub mode: JoinMode,
    /// This cluster's API server URL as the parent reaches it (default:
    /// the kubeconfig's).
    #[arg(long, value_name = "URL")]
    pub advertise_url: Option<String>,
    /// Lifetime of the credentials handed over; the parent renews them
    /// before they expire.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub credential_ttl: std::time::Duration,
    #[command(flatten)]
    pub own: OwnCluster,
}

/// Where the fleet is read from: a folder, or a Git repository at a ref.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// The fleet folder (leave it out with --repo).
    #[arg(value_name = "DIR", required_unless_present = "repo")]
    pub dir: Option<PathBuf>,
    /// Read the fleet from a Git repository instead of a folder: a local
    /// repository, or a URL (https://, ssh://, user@host:path, file://)
    /// cloned into ~/.cache/canopy and fetched on every run.
    #[arg(long, value_name = "URL|PATH", requires = "reference")]
    pub repo: Option<String>,
    /// With --repo: the branch, tag or commit to read.
    #[arg(long = "ref", value_name = "REF", requires = "repo")]
    pub reference: Option<String>,
    /// With --repo: the fleet folder inside the repository (default: its root).
    #[arg(long, value_name = "SUBDIR", requires = "repo")]
    pub path: Option<String>,
    /// With an HTTPS --repo: the environment variable holding the token
    /// (sent as the password); without it, Git's credential helper is asked.
    #[arg(long, value_name = "VAR", default_value = crate::source::remote::DEFAULT_TOKEN_ENV)]
    pub git_token_env: String,
    /// With an SSH --repo: a private key file, tried after ssh-agent
    /// (default: ~/.ssh/id_ed25519, id_ecdsa, id_rsa).
    #[arg(long, value_name = "FILE", requires = "repo")]
    pub ssh_key: Option<PathBuf>,
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
    /// The local backend's state folder (default: DIR/.canopy/state; with
    /// --repo, ~/.local/state/canopy/<repository>).
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
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum YamlOrJson {
    Yaml,
    Json,
}

#[cfg(test)]
mod tests {
    /// clap checks a command's definition only when that command is
    /// parsed; this checks every subcommand's at once (a required
    /// positional after an optional one panics at run time otherwise).
    #[test]
    fn every_command_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
