// Command etcd is upstream's server/main.go under the name the tests look for: built straight from
// go.etcd.io/etcd/server/v3, the binary would be called "server" (the last non-major-version element).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
