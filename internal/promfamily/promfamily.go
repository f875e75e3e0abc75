// Package promfamily turns a Stats snapshot type into Prometheus metric
// families: a list of specs (name, help, type, how to read the value) bound
// to descriptors once, so a scrape only reads one snapshot and formats
// numbers. Package metrics and its k8smetrics subpackage share it.
package promfamily

import "github.com/prometheus/client_golang/prometheus"

// Namespace prefixes every metric name.
const Namespace = "buildcache"

// Spec describes one metric family read from a snapshot of type S.
type Spec[S any] struct {
	Name  string // after the namespace and the collector's subsystem
	Help  string
	Type  prometheus.ValueType
	Value func(S) float64
}

// Counter is a Spec for a counter read from a uint64 field.
func Counter[S any](name, help string, v func(S) uint64) Spec[S] {
	return Spec[S]{Name: name, Help: help, Type: prometheus.CounterValue, Value: func(s S) float64 { return float64(v(s)) }}
}

// Family is a Spec bound to its descriptor.
type Family[S any] struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(S) float64
}

// New builds the descriptors of specs once, at construction, so that
// a scrape only reads a snapshot and formats numbers.
func New[S any](subsystem string, specs []Spec[S], variableLabels []string, constLabels prometheus.Labels) []Family[S] {
	out := make([]Family[S], len(specs))
	for i, s := range specs {
		out[i] = Family[S]{
			desc:  prometheus.NewDesc(prometheus.BuildFQName(Namespace, subsystem, s.Name), s.Help, variableLabels, constLabels),
			typ:   s.Type,
			value: s.Value,
		}
	}
	return out
}

// Describe sends every family's descriptor.
func Describe[S any](fs []Family[S], ch chan<- *prometheus.Desc) {
	for _, f := range fs {
		ch <- f.desc
	}
}

// Collect sends one sample of every family, read from snapshot, with the
// given values of the families' variable labels.
func Collect[S any](fs []Family[S], snapshot S, ch chan<- prometheus.Metric, labelValues ...string) {
	for _, f := range fs {
		ch <- prometheus.MustNewConstMetric(f.desc, f.typ, f.value(snapshot), labelValues...)
	}
}
