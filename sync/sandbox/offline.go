package sandbox

import (
	"context"
	"fmt"
	"net"
	"net/http"
)

// errOffline is what an offline worker's every dial and name lookup
// answers.
type errOffline struct{ network, addr string }

func (e *errOffline) Error() string {
	return fmt.Sprintf("no network while rendering offline: %s %s is not reached", e.network, e.addr)
}

// goOffline makes this worker's Go network stack reach nothing: the HTTP
// transport every library shares (http.DefaultTransport, used by
// http.Get and clients without one of their own, as kustomize's remote
// loader is) dials nothing and ignores proxies, and the resolver asks no
// DNS server (a lookup is a request too: a name can carry data out).
//
// It is the layer that holds where no network namespace can be made (a
// pod's default seccomp profile, many CI runners): the environment's dead
// proxy leaves loopback reachable, since Go never proxies localhost, and a
// pod's loopback serves the kubelet's neighbours. With a namespace, there
// is no interface to reach in the first place.
func goOffline() {
	dial := func(_ context.Context, network, addr string) (net.Conn, error) {
		return nil, &errOffline{network: network, addr: addr}
	}
	t := &http.Transport{DialContext: dial, DialTLSContext: dial}
	http.DefaultTransport = t
	http.DefaultClient.Transport = t
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: dial}
}
