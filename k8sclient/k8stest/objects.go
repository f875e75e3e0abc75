package k8stest

import (
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
)

// NewJob returns a finished batch/v1 Job in namespace, shaped as the Job
// controller leaves one (spec, pod template, status with its Complete
// condition), labelled with labels and
// "app.kubernetes.io/managed-by": "dolphinscheduler".
func NewJob(namespace, name string, labels map[string]string) *unstructured.Unstructured {
	start := metav1.NewTime(time.Date(2025, 5, 17, 16, 50, 1, 0, time.UTC))
	done := metav1.NewTime(start.Add(42 * time.Second))
	l := map[string]string{"app.kubernetes.io/managed-by": "dolphinscheduler"}
	for k, v := range labels {
		l[k] = v
	}
	job := &batchv1.Job{
		TypeMeta:   metav1.TypeMeta{APIVersion: "batch/v1", Kind: "Job"},
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: l},
		Spec: batchv1.JobSpec{
			Parallelism:          ptr.To[int32](1),
			Completions:          ptr.To[int32](1),
			BackoffLimit:         ptr.To[int32](6),
			CompletionMode:       ptr.To(batchv1.NonIndexedCompletion),
			Suspend:              ptr.To(false),
			ManualSelector:       ptr.To(false),
			PodReplacementPolicy: ptr.To(batchv1.TerminatingOrFailed),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"job-name": name, "batch.kubernetes.io/job-name": name}},
				Spec: corev1.PodSpec{
					RestartPolicy:                 corev1.RestartPolicyNever,
					DNSPolicy:                     corev1.DNSClusterFirst,
					SchedulerName:                 corev1.DefaultSchedulerName,
					TerminationGracePeriodSeconds: ptr.To[int64](30),
					SecurityContext:               &corev1.PodSecurityContext{},
					Containers: []corev1.Container{{
						Name:                     "task",
						Image:                    "apache/dolphinscheduler-worker:3.2.1",
						Command:                  []string{"sh", "-c", fmt.Sprintf("echo running task %s && exit 0", name)},
						Env:                      []corev1.EnvVar{{Name: "TASK_NAME", Value: name}},
						ImagePullPolicy:          corev1.PullIfNotPresent,
						TerminationMessagePath:   corev1.TerminationMessagePathDefault,
						TerminationMessagePolicy: corev1.TerminationMessageReadFile,
					}},
				},
			},
		},
		Status: batchv1.JobStatus{
			StartTime:      &start,
			CompletionTime: &done,
			Succeeded:      1,
			Ready:          ptr.To[int32](0),
			Terminating:    ptr.To[int32](0),
			Conditions: []batchv1.JobCondition{
				{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastProbeTime: done, LastTransitionTime: done},
				{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastProbeTime: done, LastTransitionTime: done},
			},
			UncountedTerminatedPods: &batchv1.UncountedTerminatedPods{},
		},
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(job)
	if err != nil {
		panic(err) // a Job always converts
	}
	u := &unstructured.Unstructured{Object: m}
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	return u
}

// NewPackageRepository returns a Glasskube PackageRepository (cluster-
// scoped) pointing at url.
func NewPackageRepository(name, url string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": PackageRepositoriesGVR.GroupVersion().String(),
		"kind":       "PackageRepository",
		"metadata": map[string]any{
			"name":        name,
			"annotations": map[string]any{"packages.glasskube.dev/default-repository": "false"},
		},
		"spec": map[string]any{
			"url": url,
		},
		"status": map[string]any{
			"conditions": []any{map[string]any{
				"type":               "Ready",
				"status":             "True",
				"reason":             "UpToDate",
				"message":            "repository index was fetched",
				"lastTransitionTime": "2025-06-25T18:34:32Z",
			}},
		},
	}}
}
