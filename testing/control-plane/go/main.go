// etcd's own main, so that `go build .` yields an etcd binary from go.etcd.io/etcd/server/v3.
// kube-apiserver and kube-controller-manager are built straight from k8s.io/kubernetes/cmd/*.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
