//go:build tools

// Package kubeapiserver only pins k8s.io/kubernetes/cmd/kube-apiserver in
// go.mod so that scripts/test can build it with
// go build k8s.io/kubernetes/cmd/kube-apiserver.
package kubeapiserver

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
