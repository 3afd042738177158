//go:build tools

// Package tools pins helm.sh/helm/v3 so that `go build helm.sh/helm/v3/cmd/helm` resolves from this
// module (see tests/tools/build-helm).
package tools

import _ "helm.sh/helm/v3/cmd/helm"
