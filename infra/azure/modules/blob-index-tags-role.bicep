// Blob index tags for one identity on the target container (SYNC_TAGS=index): a custom role
// holding only the two tags data actions, and its assignment on the container.
//
// Storage Blob Data Contributor, which the identity already holds there, has no tags data
// action; the built-in role that has them, Storage Blob Data Owner, also lets its holder set
// ACLs and ownership (Data Lake Storage), far more than writing tags needs.
//
// The definition is one per resource group (a fixed guid, and a role name made unique by the
// resource group, since role names are unique in the tenant). main.bicep and
// worker-containerapp.bicep both deploy this module, so whichever runs writes the same
// definition and a redeploy updates it in place; each adds its own assignment.

targetScope = 'resourceGroup'

@description('Target storage account, in this resource group.')
param targetStorageAccountName string

@description('Target container (it must exist): the role is assigned on it alone.')
param targetContainerName string

@description('Object (principal) id of the identity that writes the tags.')
param principalId string

@description('Resource id of that identity, or of the resource whose identity it is: keys the assignment\'s name, as in the other assignments of the calling template.')
param assigneeId string

var roleDefinitionName = guid(resourceGroup().id, 's3-blob-sync-blob-index-tags')

resource tagsRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: roleDefinitionName
  properties: {
    roleName: 's3-blob-sync blob index tags ${uniqueString(resourceGroup().id)}'
    description: 'Read and write blob index tags (s3-blob-sync, SYNC_TAGS=index): the tags data actions only, which Storage Blob Data Contributor lacks.'
    type: 'CustomRole'
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: [
          'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/read'
          'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/write'
        ]
        notDataActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

resource targetAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: targetStorageAccountName
}

resource targetBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: targetAccount
  name: 'default'
}

resource targetContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: targetBlobService
  name: targetContainerName
}

// The same principal and scope as its Storage Blob Data Contributor assignment.
resource tagsAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(targetContainer.id, assigneeId, roleDefinitionName)
  scope: targetContainer
  properties: {
    roleDefinitionId: tagsRole.id
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

@description('Resource id of the custom role definition (for granting it to another principal, e.g. the ECS workers\' app registration).')
output roleDefinitionId string = tagsRole.id
