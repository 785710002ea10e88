//go:build tools

// The real command-line tools canopy drives, built by the test suite from
// these pinned modules (tests/support/tools.rs): kustomize and helm.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
	_ "sigs.k8s.io/kustomize/kustomize/v5"
)
