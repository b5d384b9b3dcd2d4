-- Argo CD health of a kubetune.io/FineTuneJob, read from the status the operator writes.
-- Running and waiting jobs are Progressing, Succeeded is Healthy, Failed is Degraded.
local hs = {status = "Progressing", message = "Waiting for the kubetune operator"}
local status = obj.status
if status == nil or status.phase == nil then
  return hs
end

local function condition(kind)
  for _, c in ipairs(status.conditions or {}) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

-- Why a job is not going ahead: its first False condition (Validated, ModelResolved, ...).
local function blocker()
  for _, c in ipairs(status.conditions or {}) do
    if c.status == "False" and c.type ~= "Running" then
      return c
    end
  end
  return nil
end

local function explain(c)
  local text = c.reason or c.type
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local function duration(seconds)
  seconds = math.floor(seconds)
  if seconds >= 3600 then
    return string.format("%dh%02dm", math.floor(seconds / 3600), math.floor(seconds % 3600 / 60))
  elseif seconds >= 60 then
    return string.format("%dm%02ds", math.floor(seconds / 60), seconds % 60)
  end
  return string.format("%ds", seconds)
end

local function progress()
  local p, parts = status.progress or {}, {}
  if p.epoch ~= nil then
    table.insert(parts, string.format("epoch %d", p.epoch))
  end
  if p.step ~= nil and p.totalSteps ~= nil then
    table.insert(parts, string.format("step %d/%d", p.step, p.totalSteps))
  end
  if p.percent ~= nil then
    table.insert(parts, string.format("%d%%", p.percent))
  end
  if p.etaSeconds ~= nil then
    table.insert(parts, "ETA " .. duration(p.etaSeconds))
  end
  local m = status.metrics or {}
  if m.trainLoss ~= nil then
    table.insert(parts, string.format("train loss %.4g", m.trainLoss))
  end
  if m.evalLoss ~= nil then
    table.insert(parts, string.format("eval loss %.4g", m.evalLoss))
  end
  return table.concat(parts, ", ")
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.message = string.format("Waiting for the operator to handle generation %d", generation)
  return hs
end

local phase = status.phase
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = "Succeeded"
  local artifacts = status.artifacts or {}
  if artifacts.adapter ~= nil then
    hs.message = hs.message .. ": adapter at " .. artifacts.adapter
  end
  if status.metrics ~= nil and status.metrics.evalLoss ~= nil then
    hs.message = hs.message .. string.format(", eval loss %.4g", status.metrics.evalLoss)
  end
elseif phase == "Failed" then
  hs.status = "Degraded"
  local failed = condition("Failed") or blocker()
  hs.message = "Failed"
  if failed ~= nil then
    hs.message = "Failed: " .. explain(failed)
  end
elseif phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = "Suspended (spec.suspend is true)"
elseif phase == "Queued" then
  hs.message = "Queued: waiting for Kueue to admit the training job"
  if obj.spec ~= nil and obj.spec.scheduling ~= nil and obj.spec.scheduling.queueName ~= nil then
    hs.message = hs.message .. " (queue " .. obj.spec.scheduling.queueName .. ")"
  end
elseif phase == "Running" then
  local running = condition("Running")
  hs.message = "Running"
  local details = progress()
  if details ~= "" then
    hs.message = hs.message .. ": " .. details
  elseif running ~= nil and running.reason ~= nil then
    hs.message = "Running: " .. explain(running)
  end
elseif phase == "Pending" then
  local waiting = blocker()
  if waiting ~= nil then
    hs.message = "Pending: " .. explain(waiting)
  else
    hs.message = "Pending: the training job is being created"
  end
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
