-- Argo CD health of a Kubeflow Training Operator (v1) kubeflow.org/PyTorchJob, from its
-- conditions, most decisive first (as kubetune reads them): Succeeded, Failed, Suspended,
-- Restarting, Running, Created.
local hs = {status = "Progressing", message = "Waiting for the Training Operator"}

local function explain(c)
  if c.message ~= nil and c.message ~= "" then
    return c.type .. ": " .. c.message
  end
  return c.type
end

local conditions = {}
if obj.status ~= nil and obj.status.conditions ~= nil then
  conditions = obj.status.conditions
end

local health = {
  Succeeded = "Healthy",
  Failed = "Degraded",
  Suspended = "Suspended",
  Restarting = "Progressing",
  Running = "Progressing",
  Created = "Progressing",
}
for _, kind in ipairs({"Succeeded", "Failed", "Suspended", "Restarting", "Running", "Created"}) do
  for _, c in ipairs(conditions) do
    if c.type == kind and c.status == "True" then
      hs.status = health[kind]
      hs.message = explain(c)
      return hs
    end
  end
end

-- No condition yet: a job created suspended (e.g. by Kueue) is Suspended from the start.
local spec = obj.spec or {}
if spec.runPolicy ~= nil and spec.runPolicy.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended (runPolicy.suspend is true)"
end
return hs
