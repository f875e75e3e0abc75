package metrics

import "github.com/prometheus/client_golang/prometheus"

// namespace prefixes every metric name.
const namespace = "buildcache"

// spec describes one metric family read from a snapshot of type S.
type spec[S any] struct {
	name  string // after the namespace and the collector's subsystem
	help  string
	typ   prometheus.ValueType
	value func(S) float64
}

// counter is a spec for a counter read from a uint64 field.
func counter[S any](name, help string, v func(S) uint64) spec[S] {
	return spec[S]{name: name, help: help, typ: prometheus.CounterValue, value: func(s S) float64 { return float64(v(s)) }}
}

// family is a spec bound to its descriptor.
type family[S any] struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(S) float64
}

// families builds the descriptors of specs once, at construction, so that
// a scrape only reads a snapshot and formats numbers.
func families[S any](subsystem string, specs []spec[S], variableLabels []string, constLabels prometheus.Labels) []family[S] {
	out := make([]family[S], len(specs))
	for i, s := range specs {
		out[i] = family[S]{
			desc:  prometheus.NewDesc(prometheus.BuildFQName(namespace, subsystem, s.name), s.help, variableLabels, constLabels),
			typ:   s.typ,
			value: s.value,
		}
	}
	return out
}

func describe[S any](fs []family[S], ch chan<- *prometheus.Desc) {
	for _, f := range fs {
		ch <- f.desc
	}
}

// collect sends one sample of every family, read from snapshot, with the
// given values of the families' variable labels.
func collect[S any](fs []family[S], snapshot S, ch chan<- prometheus.Metric, labelValues ...string) {
	for _, f := range fs {
		ch <- prometheus.MustNewConstMetric(f.desc, f.typ, f.value(snapshot), labelValues...)
	}
}
