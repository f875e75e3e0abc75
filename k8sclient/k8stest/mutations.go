package k8stest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
)

func (s *Server) serveWrite(w *response, r *http.Request, req *request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		w.error(newAPIError(http.StatusBadRequest, nil, "", err.Error()))
		return
	}
	if req.verb != VerbPatch {
		var aerr *apiError
		if body, aerr = jsonBody(r, body); aerr != nil {
			w.error(aerr)
			return
		}
	}
	var st *stored
	var aerr *apiError
	var pb []byte
	s.mu.Lock()
	switch req.verb {
	case VerbCreate:
		st, aerr = s.createLocked(req.t, req.ns, body)
	case VerbUpdate:
		st, aerr = s.updateLocked(req.t, req.ns, req.name, body)
	case VerbPatch:
		st, aerr = s.patchLocked(req.t, req.ns, req.name, r.Header.Get("Content-Type"), body)
	}
	if aerr == nil && wantsProtobuf(r) {
		pb = s.protoLocked(req.t, st)
	}
	s.mu.Unlock()
	if aerr != nil {
		w.error(aerr)
		return
	}
	code := http.StatusOK
	if req.verb == VerbCreate {
		code = http.StatusCreated
	}
	w.object(code, req.t, st, pb)
}

func decodeObject(raw []byte) (*unstructured.Unstructured, *apiError) {
	m := map[string]any{}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, newAPIError(http.StatusBadRequest, nil, "", "the body is not a JSON object: "+err.Error())
	}
	return &unstructured.Unstructured{Object: m}, nil
}

func (s *Server) createLocked(t *rtype, ns string, raw []byte) (*stored, *apiError) {
	u, aerr := decodeObject(raw)
	if aerr != nil {
		return nil, aerr
	}
	if t.Namespaced {
		if ns == "" {
			ns = u.GetNamespace()
		}
		if ns == "" {
			return nil, newAPIError(http.StatusBadRequest, nil, "", "the namespace of the object is empty")
		}
		u.SetNamespace(ns)
	} else {
		u.SetNamespace("")
		ns = ""
	}
	s.uids++
	if u.GetName() == "" {
		if u.GetGenerateName() == "" {
			return nil, newAPIError(http.StatusUnprocessableEntity, t, "", "metadata.name: Required value: name or generateName is required")
		}
		u.SetName(fmt.Sprintf("%s%05x", u.GetGenerateName(), s.uids))
	}
	if t.objs[ns+"/"+u.GetName()] != nil {
		return nil, newAPIError(http.StatusConflict, t, u.GetName(),
			fmt.Sprintf("%s %q already exists", t.GVR.GroupResource(), u.GetName())).withReason(metav1.StatusReasonAlreadyExists)
	}
	u.SetAPIVersion(t.GVR.GroupVersion().String())
	u.SetKind(t.Kind)
	u.SetUID(types.UID(fmt.Sprintf("00000000-0000-4000-8000-%012x", s.uids)))
	u.SetCreationTimestamp(metav1.NewTime(time.Now().UTC().Truncate(time.Second)))
	u.SetGeneration(1)
	if len(u.GetManagedFields()) == 0 {
		u.SetManagedFields(managedFields(u, metav1.ManagedFieldsOperationUpdate))
	}
	return s.commitLocked(t, watch.Added, u)
}

func (s *Server) updateLocked(t *rtype, ns, name string, raw []byte) (*stored, *apiError) {
	u, aerr := decodeObject(raw)
	if aerr != nil {
		return nil, aerr
	}
	if !t.Namespaced {
		ns = ""
	}
	if u.GetName() != name {
		return nil, newAPIError(http.StatusBadRequest, t, name,
			fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", u.GetName(), name))
	}
	old := t.objs[ns+"/"+name]
	if old == nil {
		return nil, notFound(t, name)
	}
	prev, aerr := decodeObject(old.raw)
	if aerr != nil {
		return nil, aerr
	}
	return s.replaceLocked(t, prev, u)
}

// replaceLocked stores u in place of prev, keeping what the server owns.
func (s *Server) replaceLocked(t *rtype, prev, u *unstructured.Unstructured) (*stored, *apiError) {
	if rv := u.GetResourceVersion(); rv != "" && rv != prev.GetResourceVersion() {
		return nil, newAPIError(http.StatusConflict, t, u.GetName(),
			fmt.Sprintf("Operation cannot be fulfilled on %s %q: the object has been modified; please apply your changes to the latest version and try again",
				t.GVR.GroupResource(), u.GetName()))
	}
	u.SetNamespace(prev.GetNamespace())
	u.SetAPIVersion(t.GVR.GroupVersion().String())
	u.SetKind(t.Kind)
	u.SetUID(prev.GetUID())
	u.SetCreationTimestamp(prev.GetCreationTimestamp())
	gen := prev.GetGeneration()
	if !reflect.DeepEqual(prev.Object["spec"], u.Object["spec"]) {
		gen++
	}
	u.SetGeneration(gen)
	if len(u.GetManagedFields()) == 0 {
		// Omitted managedFields are kept, as the real server keeps them.
		u.SetManagedFields(prev.GetManagedFields())
	}
	return s.commitLocked(t, watch.Modified, u)
}

func (s *Server) patchLocked(t *rtype, ns, name, contentType string, patch []byte) (*stored, *apiError) {
	if !t.Namespaced {
		ns = ""
	}
	old := t.objs[ns+"/"+name]
	if old == nil {
		return nil, notFound(t, name)
	}
	switch mt, _, _ := strings.Cut(contentType, ";"); types.PatchType(strings.TrimSpace(mt)) {
	case types.MergePatchType, types.StrategicMergePatchType:
	default:
		return nil, newAPIError(http.StatusUnsupportedMediaType, t, name,
			fmt.Sprintf("the body of the request was in an unknown format - accepted media types include: %s, %s", types.MergePatchType, types.StrategicMergePatchType))
	}
	var p any
	if err := json.Unmarshal(patch, &p); err != nil {
		return nil, newAPIError(http.StatusBadRequest, t, name, "the patch is not JSON: "+err.Error())
	}
	prev, aerr := decodeObject(old.raw)
	if aerr != nil {
		return nil, aerr
	}
	cur, _ := decodeObject(old.raw)
	merged, ok := mergePatch(cur.Object, p).(map[string]any)
	if !ok {
		return nil, newAPIError(http.StatusUnprocessableEntity, t, name, "the patch does not leave an object")
	}
	u := &unstructured.Unstructured{Object: merged}
	u.SetName(name)
	if u.GetResourceVersion() == prev.GetResourceVersion() {
		// Not named by the patch: unconditional.
		u.SetResourceVersion("")
	}
	return s.replaceLocked(t, prev, u)
}

// mergePatch applies an RFC 7386 JSON merge patch.
func mergePatch(target, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	tm, ok := target.(map[string]any)
	if !ok {
		tm = map[string]any{}
	}
	for k, v := range pm {
		if v == nil {
			delete(tm, k)
		} else {
			tm[k] = mergePatch(tm[k], v)
		}
	}
	return tm
}

func (s *Server) deleteLocked(t *rtype, ns, name string) *apiError {
	if !t.Namespaced {
		ns = ""
	}
	old := t.objs[ns+"/"+name]
	if old == nil {
		return notFound(t, name)
	}
	u, aerr := decodeObject(old.raw)
	if aerr != nil {
		return aerr
	}
	_, aerr = s.commitLocked(t, watch.Deleted, u)
	return aerr
}

// commitLocked gives u the next resourceVersion, stores it (or removes it
// for Deleted) and records the event.
func (s *Server) commitLocked(t *rtype, typ watch.EventType, u *unstructured.Unstructured) (*stored, *apiError) {
	s.rv++
	u.SetResourceVersion(strconv.FormatUint(s.rv, 10))
	raw, err := json.Marshal(u.Object)
	if err != nil {
		return nil, newAPIError(http.StatusInternalServerError, t, u.GetName(), err.Error())
	}
	st := &stored{ns: u.GetNamespace(), name: u.GetName(), labels: labels.Set(u.GetLabels()), raw: raw}
	key := st.ns + "/" + st.name
	if typ == watch.Deleted {
		delete(t.objs, key)
	} else {
		t.objs[key] = st
	}
	s.events = append(s.events, event{rv: s.rv, typ: typ, res: t, obj: st})
	close(s.changed)
	s.changed = make(chan struct{})
	return st, nil
}

// managedFields returns a managedFields entry naming every field of u
// outside status, as a field manager's would.
func managedFields(u *unstructured.Unstructured, op metav1.ManagedFieldsOperationType) []metav1.ManagedFieldsEntry {
	set := fieldSet(u.Object, true)
	raw, _ := json.Marshal(set)
	now := metav1.NewTime(time.Now().UTC().Truncate(time.Second))
	return []metav1.ManagedFieldsEntry{{
		Manager:    "k8stest",
		Operation:  op,
		APIVersion: u.GetAPIVersion(),
		Time:       &now,
		FieldsType: "FieldsV1",
		FieldsV1:   &metav1.FieldsV1{Raw: raw},
	}}
}

func fieldSet(v any, top bool) map[string]any {
	out := map[string]any{}
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if top && (k == "status" || k == "apiVersion" || k == "kind") {
				continue
			}
			if top && k == "metadata" {
				md, _ := x.(map[string]any)
				x = map[string]any{"labels": md["labels"], "annotations": md["annotations"]}
			}
			if x == nil {
				continue
			}
			out["f:"+k] = fieldSet(x, false)
		}
	case []any:
		for i, x := range v {
			if m, ok := x.(map[string]any); ok {
				if name, ok := m["name"].(string); ok {
					out[fmt.Sprintf(`k:{"name":%q}`, name)] = fieldSet(m, false)
					continue
				}
			}
			out[fmt.Sprintf("i:%d", i)] = map[string]any{}
		}
		out["."] = map[string]any{}
	}
	return out
}
