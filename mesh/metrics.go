package mesh

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/transport"
	"github.com/mxp-dataplane/mxp/wire"
)

// Metrics exposes a node to Prometheus (the whitepaper's metric families,
// under Prometheus naming). Counters are read at scrape time from the
// node's atomics and the shards' own counters: nothing is added to the hot
// path but a few atomic increments.
type Metrics struct {
	n *Node

	agents, conns, backend                 *prometheus.Desc
	messages, routed, notFound, timedOut   *prometheus.Desc
	dropped, registered, evicted           *prometheus.Desc
	dpPackets, dpBytes, dpDropped, dpCalls *prometheus.Desc
	dpGSO, dpGRO                           *prometheus.Desc
	epUnknown, epBadHS, epCookies, epReset *prometheus.Desc
	early                                  *prometheus.Desc
	callLatency                            prometheus.Histogram
}

// NewMetrics returns the collector of n; register it with a prometheus.Registry.
func NewMetrics(n *Node) *Metrics {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("mxp_"+name, help, labels, nil)
	}
	m := &Metrics{
		n:          n,
		agents:     d("agents_registered", "Agents registered with this node."),
		conns:      d("connections", "Open transport connections, by shard.", "shard"),
		backend:    d("dataplane_backend_info", "The dataplane backend in use.", "backend"),
		messages:   d("messages_received_total", "MXP messages received by the node, by type.", "type"),
		routed:     d("messages_routed_total", "Messages the node forwarded to another agent."),
		notFound:   d("route_not_found_total", "Calls and streams to agents that are not registered."),
		timedOut:   d("calls_timed_out_total", "Calls the node answered with DeadlineExceeded."),
		dropped:    d("messages_dropped_total", "Malformed or unroutable messages dropped."),
		registered: d("agent_registrations_total", "Agent registrations (including re-registrations)."),
		evicted:    d("agent_evictions_total", "Agents evicted after three missed heartbeats."),
		dpPackets:  d("dataplane_packets_total", "UDP datagrams moved by the dataplane, by shard and direction.", "shard", "direction"),
		dpBytes:    d("dataplane_bytes_total", "UDP payload bytes moved by the dataplane, by shard and direction.", "shard", "direction"),
		dpDropped:  d("dataplane_drops_total", "Datagrams dropped by the dataplane, by shard and direction.", "shard", "direction"),
		dpCalls:    d("dataplane_syscalls_total", "Batched system calls (or ring operations), by shard and direction.", "shard", "direction"),
		dpGSO:      d("dataplane_gso_sends_total", "Messages sent as one GSO super-datagram, by shard.", "shard"),
		dpGRO:      d("dataplane_gro_splits_total", "Coalesced receive buffers split, by shard.", "shard"),
		epUnknown:  d("transport_unknown_connection_packets_total", "Packets for no known connection, by shard.", "shard"),
		epBadHS:    d("transport_bad_handshake_packets_total", "Handshake packets refused (malformed, failed authentication), by shard.", "shard"),
		epCookies:  d("transport_cookie_replies_total", "Stateless cookie replies sent under handshake load, by shard.", "shard"),
		epReset:    d("transport_stateless_resets_total", "Stateless resets sent for lost connections, by shard.", "shard"),
		early:      d("zero_rtt_messages_total", "0-RTT data of resuming handshakes: messages taken, messages dropped (not whole messages), and hellos whose data was refused (a reused or expired ticket, a full strike register: sent again after the handshake).", "result"),
	}
	m.callLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "mxp_call_duration_seconds", Help: "Time from a call's arrival at the node to its reply.",
		Buckets: prometheus.ExponentialBuckets(10e-6, 2, 20),
	})
	n.observeCall = func(d time.Duration) { m.callLatency.Observe(d.Seconds()) }
	return m
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.agents, m.conns, m.backend, m.messages, m.routed, m.notFound, m.timedOut,
		m.dropped, m.registered, m.evicted, m.dpPackets, m.dpBytes, m.dpDropped, m.dpCalls, m.dpGSO, m.dpGRO,
		m.epUnknown, m.epBadHS, m.epCookies, m.epReset, m.early} {
		ch <- d
	}
	m.callLatency.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	n := m.n
	c := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	g(m.agents, float64(len(n.Agents())))
	g(m.backend, 1, n.h.selection.Backend.Name())
	for t := range n.msgCount {
		if v := n.msgCount[t].Load(); v > 0 {
			c(m.messages, v, wire.MsgType(t).String())
		}
	}
	st := &n.stats
	c(m.routed, st.Routed.Load())
	c(m.notFound, st.NotFound.Load())
	c(m.timedOut, st.TimedOut.Load())
	c(m.dropped, st.Dropped.Load())
	c(m.registered, st.Registered.Load())
	c(m.evicted, st.Evicted.Load())
	c(m.early, n.h.earlyTaken.Load(), "taken")
	c(m.early, n.h.earlyDropped.Load(), "dropped")
	var earlyRefused uint64
	for i, sh := range n.h.shards {
		s := strconv.Itoa(i)
		var ds dataplane.Stats = n.h.engine().Conn(i).Stats()
		c(m.dpPackets, ds.RxPackets, s, "rx")
		c(m.dpPackets, ds.TxPackets, s, "tx")
		c(m.dpBytes, ds.RxBytes, s, "rx")
		c(m.dpBytes, ds.TxBytes, s, "tx")
		c(m.dpDropped, ds.RxDropped, s, "rx")
		c(m.dpDropped, ds.TxDropped, s, "tx")
		c(m.dpCalls, ds.RxCalls, s, "rx")
		c(m.dpCalls, ds.TxCalls, s, "tx")
		c(m.dpGSO, ds.TxGSOSends, s)
		c(m.dpGRO, ds.RxGROSplits, s)
		es, conns, ok := sh.snapshot()
		if !ok {
			continue
		}
		g(m.conns, float64(conns), s)
		c(m.epUnknown, es.UnknownConn, s)
		c(m.epBadHS, es.BadHandshake, s)
		c(m.epCookies, es.CookieReplies, s)
		c(m.epReset, es.Resets, s)
		earlyRefused += es.EarlyRefused
	}
	c(m.early, earlyRefused, "refused")
	m.callLatency.Collect(ch)
}

// snapshot reads the shard's endpoint counters on its own goroutine.
func (sh *shard) snapshot() (transport.EndpointStats, int, bool) {
	var s transport.EndpointStats
	var n int
	if !sh.doWait(func(time.Time) { s, n = sh.ep.Stats(), sh.ep.Len() }) {
		return transport.EndpointStats{}, 0, false
	}
	return s, n, true
}
