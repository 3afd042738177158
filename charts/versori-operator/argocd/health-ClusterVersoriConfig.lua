-- Argo CD health check for versori.com/v1alpha1 ClusterVersoriConfig (resource.customizations.health.versori.com_ClusterVersoriConfig).
-- The five health-*.lua files (System, ProjectSystem, Connection, VersoriConfig,
-- ClusterVersoriConfig) differ only in the `kind` line; argocd-cm-patch.yaml and
-- argo-cd-values.yaml are generated from them (tests/argocd_health.rs). Verdicts: docs/conditions.md.
-- Runs on Argo CD's gopher-lua (Lua 5.1) with only the base library: no string, os or math calls.
local kind = "ClusterVersoriConfig"

-- Ready=False reasons that clear without anyone acting: another resource becoming ready, or Versori
-- and the Kubernetes API answering again (the operator retries with backoff). Any reason not listed
-- in `suspended` or `degraded` is treated the same way.
local waiting = {
  Creating = true,
  Deleting = true,
  Unavailable = true,
  CreateInProgress = true,
  WaitingForSystem = true,
  WaitingForProjectSystem = true,
  VersoriAPIError = true,
  VersoriRateLimited = true,
  KubernetesAPIError = true,
}

-- Waiting on an external event that only a person can bring about (authorizing in a browser,
-- removing the versori.com/paused annotation).
local suspended = {
  AuthorizationRequired = true,
  Paused = true,
}

-- Failures that stay until someone changes the spec, a Secret, a Versori config, or Versori.
local degraded = {
  SecretNotFound = true,
  InvalidSecret = true,
  SecretTypeRefused = true,
  SecretNotLabelled = true,
  HostNotAllowed = true,
  MissingCredential = true,
  AuthSchemeNotFound = true,
  ProjectNotFound = true,
  EnvironmentNotFound = true,
  SystemNotFound = true,
  ConfigNotFound = true,
  ConfigUnusable = true,
  DependencyInOtherOrganisation = true,
  OrganisationChanged = true,
  ObservedNotFound = true,
  ExternalIdMismatch = true,
  UnsupportedAuthScheme = true,
  AlreadyExists = true,
  AmbiguousName = true,
  DependencyOutsideShard = true,
  AdoptTargetNotFound = true,
  VersoriRejected = true,
  VersoriUnauthorized = true,
  InUse = true, -- outside deletion: an auth scheme removed from the spec is still in use
}

-- Argo CD hands integers over as numbers, json.Number values as strings: compare as numbers.
local function number(value)
  if value == nil then
    return nil
  end
  return tonumber(value)
end

local function verdict(status, message)
  return { status = status, message = message }
end

local function assess(obj)
  local metadata = obj.metadata or {}
  local status = obj.status
  local ready = nil
  local synced = nil
  if type(status) == "table" and type(status.conditions) == "table" then
    for _, condition in ipairs(status.conditions) do
      if type(condition) == "table" and condition.type == "Ready" then
        ready = condition
      end
      if type(condition) == "table" and condition.type == "Synced" then
        synced = condition
      end
    end
  end

  -- Paused (versori.com/paused: "true"): Synced says so and Ready keeps its last value, which may
  -- be for an older spec. Nothing reaches Versori, deletion included, until the annotation goes.
  if type(synced) == "table" and synced.status == "False" and synced.reason == "Paused" then
    local annotations = metadata.annotations
    if type(annotations) == "table" and annotations["versori.com/paused"] == "true" then
      local why = synced.message
      if type(why) ~= "string" or why == "" then
        why = "Paused"
      end
      return verdict("Suspended", why)
    end
    return verdict("Progressing", "Waiting for the operator to apply the changes held while this "
      .. kind .. " was paused")
  end

  if ready == nil then
    return verdict("Progressing", "Waiting for the operator to reconcile this " .. kind)
  end

  local generation = number(metadata.generation)
  local observed = number(ready.observedGeneration)
  if observed == nil then
    observed = number(status.observedGeneration)
  end
  if generation ~= nil and observed ~= generation then
    local seen = "none"
    if observed ~= nil then
      seen = tostring(observed)
    end
    return verdict("Progressing", "Waiting for the operator to reconcile generation "
      .. tostring(generation) .. " of this " .. kind .. " (status is for generation " .. seen .. ")")
  end

  local reason = ready.reason
  if type(reason) ~= "string" then
    reason = ""
  end
  local message = ready.message
  if type(message) ~= "string" or message == "" then
    message = reason
  end

  if ready.status == "True" then
    -- Versori matched the spec when last seen; a failed last reconcile (Synced=False, such as a
    -- resync read that failed in passing) is said, not counted against health.
    if type(synced) == "table" and synced.status == "False" then
      local why = synced.message
      if type(why) ~= "string" or why == "" then
        why = synced.reason
      end
      if type(why) ~= "string" then
        why = ""
      end
      return verdict("Healthy", message .. " (the last reconcile failed and is retried: " .. why .. ")")
    end
    return verdict("Healthy", message)
  end
  if metadata.deletionTimestamp ~= nil then
    -- Deleting: the finalizer waits for dependants (InUse) or retries Versori until it is gone.
    return verdict("Progressing", message)
  end
  if suspended[reason] then
    return verdict("Suspended", message)
  end
  if degraded[reason] then
    return verdict("Degraded", message)
  end
  if waiting[reason] then
    return verdict("Progressing", message)
  end
  -- Ready=Unknown, or a reason this script does not know yet: wait rather than fail the sync.
  return verdict("Progressing", message)
end

local hs = assess(obj)
return hs
