package protocol

// RequestDict returns m as a Celery worker sees it: one key for each field
// its Request reads, the embed, the properties and the content type. It is
// what `gocelery decode` prints and the shape of the interop test vectors'
// "expect" object, so Go and Python views compare key by key.
func (m *Message) RequestDict() map[string]any {
	var eta, expires, groupIndex, chord, stamped any
	if !m.ETA.IsZero() {
		eta = m.ETA
	}
	if !m.Expires.IsZero() {
		expires = m.Expires
	}
	if m.GroupIndex != nil {
		groupIndex = int64(*m.GroupIndex)
	}
	if m.Chord != nil {
		chord = m.Chord.Map()
	}
	if m.StampedHeaders != nil {
		stamped = toAnySlice(m.StampedHeaders)
	}
	args, kwargs, stamps, custom := m.Args, m.Kwargs, m.Stamps, m.Headers
	if args == nil {
		args = []any{}
	}
	if kwargs == nil {
		kwargs = map[string]any{}
	}
	if stamps == nil {
		stamps = map[string]any{}
	}
	if custom == nil {
		custom = map[string]any{}
	}
	return map[string]any{
		"protocol":              int64(m.Protocol),
		"id":                    m.ID,
		"task":                  m.Task,
		"args":                  args,
		"kwargs":                kwargs,
		"eta":                   eta,
		"expires":               expires,
		"retries":               int64(m.Retries),
		"timelimit":             []any{seconds(m.TimeLimit.Hard), seconds(m.TimeLimit.Soft)},
		"root_id":               nilIfEmpty(m.RootID),
		"parent_id":             nilIfEmpty(m.ParentID),
		"group":                 nilIfEmpty(m.Group),
		"group_index":           groupIndex,
		"shadow":                nilIfEmpty(m.Shadow),
		"origin":                nilIfEmpty(m.Origin),
		"argsrepr":              nilIfEmpty(m.ArgsRepr),
		"kwargsrepr":            nilIfEmpty(m.KwargsRepr),
		"lang":                  nilIfEmpty(m.Lang),
		"ignore_result":         m.IgnoreResult,
		"replaced_task_nesting": int64(m.ReplacedTaskNesting),
		"stamped_headers":       stamped,
		"stamps":                stamps,
		"custom_headers":        custom,
		"callbacks":             sigMaps(m.Callbacks),
		"errbacks":              sigMaps(m.Errbacks),
		"chain":                 sigMaps(m.Chain),
		"chord":                 chord,
		"correlation_id":        nilIfEmpty(m.Properties.CorrelationID),
		"reply_to":              m.Properties.ReplyTo,
		"delivery_mode":         int64(m.Properties.DeliveryMode),
		"priority":              int64(m.Properties.Priority),
		"content_type":          m.ContentType,
		"content_encoding":      m.ContentEncoding,
		"compression":           nilIfEmpty(m.Compression),
	}
}

func sigMaps(s []Signature) any {
	if s == nil {
		return nil
	}
	out := make([]any, len(s))
	for i := range s {
		out[i] = s[i].Map()
	}
	return out
}

func toAnySlice(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}
