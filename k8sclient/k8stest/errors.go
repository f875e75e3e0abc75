package k8stest

import (
	"fmt"
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// apiError is a failure answered as a metav1.Status.
type apiError struct {
	code    int
	reason  metav1.StatusReason
	message string
	details *metav1.StatusDetails
}

func (e *apiError) status() *metav1.Status {
	return &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure,
		Message:  e.message,
		Reason:   e.reason,
		Details:  e.details,
		Code:     int32(e.code),
	}
}

func (e *apiError) statusError() error { return &apierrors.StatusError{ErrStatus: *e.status()} }

func (e *apiError) withReason(r metav1.StatusReason) *apiError {
	e.reason = r
	return e
}

// reasons are the Status reasons kube-apiserver gives with each code.
var reasons = map[int]metav1.StatusReason{
	http.StatusBadRequest:           metav1.StatusReasonBadRequest,
	http.StatusUnauthorized:         metav1.StatusReasonUnauthorized,
	http.StatusForbidden:            metav1.StatusReasonForbidden,
	http.StatusNotFound:             metav1.StatusReasonNotFound,
	http.StatusMethodNotAllowed:     metav1.StatusReasonMethodNotAllowed,
	http.StatusConflict:             metav1.StatusReasonConflict,
	http.StatusGone:                 metav1.StatusReasonExpired,
	http.StatusUnsupportedMediaType: metav1.StatusReasonUnsupportedMediaType,
	http.StatusUnprocessableEntity:  metav1.StatusReasonInvalid,
	http.StatusTooManyRequests:      metav1.StatusReasonTooManyRequests,
	http.StatusInternalServerError:  metav1.StatusReasonInternalError,
	http.StatusServiceUnavailable:   metav1.StatusReasonServiceUnavailable,
	http.StatusGatewayTimeout:       metav1.StatusReasonTimeout,
}

func newAPIError(code int, t *rtype, name, message string) *apiError {
	reason, ok := reasons[code]
	if !ok {
		reason = metav1.StatusReasonUnknown
	}
	var details *metav1.StatusDetails
	if t != nil {
		details = &metav1.StatusDetails{Name: name, Group: t.GVR.Group, Kind: t.GVR.Resource}
		if message == "" {
			message = fmt.Sprintf("%s %q: %s", t.GVR.GroupResource(), name, strings.ToLower(http.StatusText(code)))
		}
	}
	if message == "" {
		message = http.StatusText(code)
	}
	return &apiError{code: code, reason: reason, message: message, details: details}
}

func notFound(t *rtype, name string) *apiError {
	return newAPIError(http.StatusNotFound, t, name, fmt.Sprintf("%s %q not found", t.GVR.GroupResource(), name))
}
