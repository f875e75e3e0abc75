package s3

// SetListPageSize makes Walk list n keys a page, so that a test sees
// pagination without storing a thousand objects.
func SetListPageSize(c *Cache, n int32) { c.listPageSize = n }
