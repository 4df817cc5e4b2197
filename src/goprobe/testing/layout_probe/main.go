// The program whose build, per Go release, gives goprobe the runtime's layouts for stripped binaries
// (goprobe.testing.runtime_tables): it only has to link the runtime.
package main

import (
	"fmt"
	"os"
)

func main() {
	done := make(chan struct{})
	go func() { close(done) }()
	<-done
	fmt.Fprintln(os.Stdout, "ok")
}
