-- Argo CD health of a Kubeflow Trainer (v2) trainer.kubeflow.org/TrainJob, from its conditions
-- (Complete, Failed, Suspended) and, while none is final, its JobSet's jobs (jobsStatus).
local hs = {status = "Progressing", message = "Waiting for Kubeflow Trainer"}

local function explain(c)
  if c.message ~= nil and c.message ~= "" then
    return c.type .. ": " .. c.message
  end
  return c.type
end

local status = obj.status or {}
local conditions = status.conditions or {}
local health = {Complete = "Healthy", Failed = "Degraded", Suspended = "Suspended"}
for _, kind in ipairs({"Complete", "Failed", "Suspended"}) do
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
if spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended (spec.suspend is true)"
  return hs
end

-- Running: each of the JobSet's jobs ready (all its pods up) or done.
local jobs = status.jobsStatus or {}
if #jobs > 0 then
  local ready, total = 0, 0
  for _, j in ipairs(jobs) do
    total = total + 1
    if (j.ready or 0) + (j.succeeded or 0) >= 1 then
      ready = ready + 1
    end
  end
  if ready == total then
    hs.message = "Running"
  else
    hs.message = "Starting: " .. ready .. " of " .. total .. " jobs ready"
  end
end
return hs
